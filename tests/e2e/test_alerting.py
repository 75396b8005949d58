"""The shipped alerting: Prometheus rules (unit-tested with promtool), a real Prometheus scraping a
running daemon with those rules, and a Grafana dashboard that uses only metrics syncd exports.

promtool and prometheus come from Debian's ``prometheus`` package, which ``.ci/run`` installs. Without
them the tests that need them skip with the reason, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from syncd.metrics import Metrics
from syncd.sandbox.server import Sandbox
from tests.support.config import WriteConfig
from tests.support.daemon import CUSTOMERS_ONLY, DaemonProcess, overrides

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "syncd-rules.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "syncd-rules_test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "syncd.json"
ALERTS = {
    "SyncdDown",
    "SyncdNotReady",
    "SyncdMappingStale",
    "SyncdItemsFailing",
    "SyncdSafetyStop",
    "SyncdThrottled",
    "SyncdAuthFailing",
    "SyncdLedgerNotWritable",
}


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{binary} is not installed, but CI is set: .ci/run installs the prometheus package")
        pytest.skip(f"{binary} not installed (Debian package prometheus; .ci/run installs it)")
    return path


# -- which names exist -----------------------------------------------------------------------------


def exported_names() -> set[str]:
    """Every series name syncd's /metrics can show (counters' _total, histograms' _bucket/_sum/...)."""
    m = Metrics()
    names: set[str] = set()
    for family in m.registry.collect():
        base = family.name
        if family.type == "counter":
            names |= {base + "_total", base + "_created"}
        elif family.type == "histogram":
            names |= {base + s for s in ("_bucket", "_sum", "_count", "_created")}
        elif family.type == "info":
            names.add(base + "_info")
        else:
            names.add(base)
    return names


_FUNCTIONS_AND_KEYWORDS = {
    # PromQL functions and keywords that may appear in our expressions
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "delta", "time", "absent",
    "histogram_quantile", "label_values", "by", "without", "on", "ignoring", "group_left",
    "group_right", "or", "and", "unless", "bool", "offset", "humanize", "humanizeDuration",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label matchers, groupings, strings and ranges removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^{}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    expr = re.sub(r"label_values\((.*),\s*\w+\s*\)", r"\1", expr)  # Grafana: label_values(series, label)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)", expr):
        name = m.group(1)
        if name in _FUNCTIONS_AND_KEYWORDS or re.fullmatch(r"\d+\w*", name):
            continue
        names.add(name)
    return names


def test_metric_names_parser_sees_what_an_expression_reads() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, mapping) (rate(syncd_run_duration_seconds_bucket{job="syncd",'
        'mapping=~"$mapping"}[1h]))) or on (job) time() - syncd_nope'
    )
    assert metric_names(expr) == {"syncd_run_duration_seconds_bucket", "syncd_nope"}


def test_every_rule_reads_only_exported_metrics_and_each_alert_is_unit_tested() -> None:
    rules = yaml.safe_load(RULES.read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    allowed = exported_names() | recorded | {"up"}
    alerts = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - allowed
            assert not unknown, f"{rule.get('alert') or rule.get('record')} reads {unknown}"
            if "alert" in rule:
                alerts.add(rule["alert"])
                assert rule["labels"]["severity"] in ("warning", "critical")
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert alerts == ALERTS
    # Each alert has a case where it fires and one where it stays quiet.
    cases = yaml.safe_load(RULE_TESTS.read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in cases["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fired == ALERTS, ALERTS - fired
    assert quiet == ALERTS, ALERTS - quiet


def test_promtool_rule_unit_tests_pass() -> None:
    promtool = need("promtool")
    import subprocess

    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_grafana_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []
    for panel in dashboard["panels"]:
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} shows nothing"
        exprs += [t["expr"] for t in targets]
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    allowed = exported_names() | {"up"}
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert not names - allowed, f"{expr!r} reads {names - allowed}, which syncd does not export"
        used |= names
    # The dashboard covers what an operator looks at first.
    for name in (
        "syncd_ready",
        "syncd_last_success_timestamp_seconds",
        "syncd_items_total",
        "syncd_runs_total",
        "syncd_http_requests_total",
        "syncd_rate_limit_wait_seconds_total",
    ):
        assert name in used, name


# -- a real Prometheus scraping a real daemon -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def prom_api(port: int, path: str, **params: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/api/v1/{path}", params=params) as resp,
    ):
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]


async def poll(port: int, path: str, predicate: Any, timeout: float, what: str, **params: str) -> Any:
    """Ask Prometheus until ``predicate(data)`` holds (bounded); returns that data."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await prom_api(port, path, **params)
            if predicate(last):
                return last
        except (aiohttp.ClientError, AssertionError):
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last answer: {json.dumps(last)[:2000]}")


@pytest.mark.slow
async def test_prometheus_scrapes_the_daemon_and_evaluates_the_rules(
    make_sandbox: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    prometheus = need("prometheus")
    sb: Sandbox = await make_sandbox(contacts=10, persons=10)
    cfg = write_config(sb, **overrides(schedule={"interval": "1h"}, **CUSTOMERS_ONLY))
    daemon = await DaemonProcess.start(cfg)
    prom: asyncio.subprocess.Process | None = None
    try:
        syncd_port = await daemon.port()
        await daemon.wait_log("run finished", mapping="customers")
        prom_port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "syncd", "static_configs": [{"targets": [f"127.0.0.1:{syncd_port}"]}]}
                    ],
                }
            )
        )
        prom = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        # The target is up, and every rule was evaluated without error.
        await poll(
            prom_port,
            "targets",
            lambda d: any(t["health"] == "up" for t in d["activeTargets"]),
            60,
            "syncd's target to be up",
        )

        def all_rules_ok(data: Any) -> bool:
            rules = [r for g in data["groups"] for r in g["rules"]]
            names = {r["name"] for r in rules}
            evaluated = all(r.get("lastEvaluation", "0001").startswith("0001") is False for r in rules)
            return names >= ALERTS and evaluated and all(r["health"] == "ok" for r in rules)

        await poll(prom_port, "rules", all_rules_ok, 60, "every rule evaluated with health ok")
        # The readiness gauge and the recording rules see the daemon's mapping and company.
        await poll(
            prom_port,
            "query",
            lambda d: [s["value"][1] for s in d["result"]] == ["1"],
            30,
            "syncd_ready == 1",
            query='syncd_ready{job="syncd"}',
        )
        since = await poll(
            prom_port,
            "query",
            lambda d: len(d["result"]) == 1,
            30,
            "the mapping's time since success",
            query='syncd:mapping_seconds_since_success{mapping="customers"}',
        )
        labels = since["result"][0]["metric"]
        assert labels["company"] == sb.config()["businesscentral"]["company"]
        assert 0 <= float(since["result"][0]["value"][1]) < 600  # it synced just now
        # Healthy: nothing pending or firing (SyncdDown's absent() may be pending from before the first
        # scrape until the next evaluation).
        await poll(prom_port, "alerts", lambda d: d["alerts"] == [], 30, "no alerts while healthy")

        # Stop the daemon: the scrape fails and SyncdDown goes pending (it fires after 5 minutes).
        daemon.signal(2)
        assert await daemon.wait() == 0
        await poll(
            prom_port,
            "alerts",
            lambda d: any(a["labels"]["alertname"] == "SyncdDown" for a in d["alerts"]),
            60,
            "SyncdDown pending",
        )
        alert = next(a for a in (await prom_api(prom_port, "alerts"))["alerts"])
        assert alert["state"] == "pending" and alert["labels"]["instance"] == f"127.0.0.1:{syncd_port}"
    finally:
        if prom is not None and prom.returncode is None:
            prom.terminate()
            try:
                await asyncio.wait_for(prom.wait(), 30)
            except TimeoutError:
                prom.kill()
                await prom.wait()
        await daemon.kill()


def test_configured_mappings_have_zero_series_and_their_interval() -> None:
    """increase() cannot see a counter's first step from nothing: the series exist at 0 from the start."""
    m = Metrics(clock=lambda: 1000.0)
    m.set_mappings({"customers": "CRONUS DE", "vendors": "CRONUS DE"}, {"customers": 600.0, "vendors": 60.0})
    text = m.render().decode()
    assert 'syncd_items_total{company="CRONUS DE",mapping="customers",result="failed"} 0.0' in text
    stops = 'syncd_runs_total{company="CRONUS DE",mapping="customers",mode="incremental",'
    stops += 'outcome="safety_stop"}'
    assert stops + " 0.0" in text
    assert 'syncd_schedule_interval_seconds{company="CRONUS DE",mapping="customers"} 600.0' in text
    assert "syncd_start_time_seconds 1000.0" in text
    # vendors disabled by a reload: its interval series goes, so SyncdMappingStale stops watching it
    m.set_mappings({"customers": "CRONUS DE", "vendors": "CRONUS DE"}, {"customers": 600.0})
    text = m.render().decode()
    assert 'syncd_schedule_interval_seconds{company="CRONUS DE",mapping="vendors"}' not in text
    m.set_readiness(False, {"auth": False, "ledger": True})
    text = m.render().decode()
    assert "syncd_ready 0.0" in text and 'syncd_ready_check{check="auth"} 0.0' in text


async def test_ledger_knows_the_last_success_across_restarts(tmp_path: Path) -> None:
    from syncd.ledger import Ledger

    async with Ledger.open(tmp_path / "l.sqlite") as ledger:
        assert await ledger.last_success_at("customers") is None
        ok = await ledger.start_run("customers", "incremental")
        await ledger.finish_run(ok, {}, "ok")
        failed = await ledger.start_run("customers", "incremental")
        await ledger.finish_run(failed, {}, "failed", "boom")
        runs = {r.id: r for r in await ledger.last_runs("customers")}
        when = await ledger.last_success_at("customers")
    assert when is not None and when.isoformat(timespec="milliseconds") == runs[ok].finished_at
