"""Several Business Central companies in one config, one daemon, one ledger, one token, one rate limit;
and two mappings never own one BC record (issue #13 point 7)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import structlog

from syncd import ledger as ledger_module
from syncd.config import parse_config
from syncd.errors import ConfigError
from syncd.ledger import Ledger, LedgerItem
from syncd.locks import MappingLock, read_holder
from syncd.sandbox.data import COMPANY_NAME, SECOND_COMPANY_NAME
from syncd.sandbox.server import Sandbox
from syncd.types import Outcome
from tests.support.config import WriteConfig
from tests.support.daemon import DaemonProcess, eventually, get, overrides
from tests.support.e2e import syncd

BASE = """\
superoffice:
  base_url: http://127.0.0.1:8101/Cust00001/api/v1
  auth: {type: basic, username: syncd, password: pw}
businesscentral:
  base_url: http://127.0.0.1:8102/v2.0/t/production/api/v2.0
COMPANY
  auth: {type: client_credentials, tenant_id: t, client_id: c, client_secret: s, token_url: http://x/t}
mappings:
MAPPINGS"""


def config_text(company: str | None, *mappings: str) -> str:
    return BASE.replace("COMPANY\n", f"  company: {company}\n" if company else "").replace(
        "MAPPINGS", "".join(f"  - {m}\n" for m in mappings)
    )


CUSTOMERS = "{name: customers, source: contact, target: customers, match: {source: code, target: number}}"


def customers(name: str, company: str | None = None, target: str = "customers") -> str:
    extra = f", company: {json.dumps(company)}" if company else ""
    return (
        f"{{name: {name}, source: contact, target: {target}, match: {{source: code, target: number}}{extra}}}"
    )


# -- config -----------------------------------------------------------------------------------------


def test_company_per_mapping_defaults_to_businesscentral_company() -> None:
    cfg = parse_config(config_text("CRONUS", customers("customers"), customers("de", "CRONUS DE")))
    assert [cfg.company_of(m) for m in cfg.mappings] == ["CRONUS", "CRONUS DE"]
    assert cfg.companies == ["CRONUS", "CRONUS DE"]


def test_businesscentral_company_is_optional_when_every_mapping_names_one() -> None:
    cfg = parse_config(config_text(None, customers("us", "CRONUS"), customers("de", "CRONUS DE")))
    assert cfg.businesscentral.company is None
    with pytest.raises(ConfigError, match=r"mapping 'us' names no company and businesscentral.company"):
        parse_config(config_text(None, customers("us"), customers("de", "CRONUS DE")))


def test_same_entity_in_the_same_company_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config_text("CRONUS", customers("customers"), customers("again", "cronus")))
    assert "mappings 'customers' and 'again' both write pictures to customers of company" in err.value.message
    # same entity, different companies: fine; same company, different entities: fine
    parse_config(config_text("CRONUS", customers("customers"), customers("de", "CRONUS DE")))
    parse_config(config_text("CRONUS", customers("customers"), customers("vendors", target="vendors")))


# -- ledger -----------------------------------------------------------------------------------------


def _v1_ledger(path: Path) -> None:
    """A ledger as the first syncd wrote it: schema v1 with an item and a finished run."""
    with sqlite3.connect(path) as raw:
        for statement in ledger_module.MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 1")
        raw.execute(
            "INSERT INTO items (mapping, source_kind, source_id, target_kind, target_id, status, "
            "output_hash, target_etag, wrote_picture) VALUES "
            "('customers', 'contact', 7, 'customers', 'abc', 'written', 'h1', 'W/\"1\"', 1)"
        )
        raw.execute(
            "INSERT INTO runs (mapping, started_at, finished_at, mode, outcome) VALUES "
            "('customers', '2026-01-01T00:00:00+00:00', '2026-01-01T00:01:00+00:00', 'incremental', 'ok')"
        )


async def test_a_v1_ledger_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    _v1_ledger(path)
    async with Ledger.open(path) as ledger:
        items = await ledger.get_items("customers", "contact", [7])
        assert items[7].wrote_picture and items[7].target_etag == 'W/"1"' and items[7].output_hash == "h1"
        runs = await ledger.last_runs("customers")
        assert [(r.outcome, r.company) for r in runs] == [("ok", None)]
        assert await ledger.companies() == {}
        # its next run binds it to the company it resolves to, and the run names the company
        await ledger.bind_company("customers", "C1", "CRONUS", "customers")
        run = await ledger.start_run("customers", "incremental")
        await ledger.finish_run(run, {}, "ok")
        assert (await ledger.get_run(run)).company == "CRONUS"  # type: ignore[union-attr]
        assert await ledger.count_items() == 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == ledger_module.SCHEMA_VERSION
    async with Ledger.open(path, readonly=True) as ro:
        rows = [r async for r in ro.export()]
    item = next(r for r in rows if r["table"] == "items")
    assert (item["company"], item["company_id"], item["source_id"]) == ("CRONUS", "C1", 7)


async def test_a_mapping_pointed_at_another_company_is_refused_until_reset(tmp_path: Path) -> None:
    async with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        await ledger.bind_company("customers", "C1", "CRONUS", "customers")
        await ledger.record(
            LedgerItem(
                mapping="customers",
                source_kind="contact",
                source_id=1,
                target_kind="customers",
                status=Outcome.WRITTEN,
                wrote_picture=True,
            )
        )
        await ledger.bind_company("customers", "c1", "CRONUS", "customers")  # same company: fine
        with pytest.raises(ConfigError, match="now points it at customers of company 'CRONUS DE'") as err:
            await ledger.bind_company("customers", "C2", "CRONUS DE", "customers")
        assert "syncd ledger reset --mapping customers" in (err.value.hint or "")
        await ledger.reset("customers")
        await ledger.bind_company("customers", "C2", "CRONUS DE", "customers")
        assert (await ledger.companies())["customers"].company == "CRONUS DE"


async def test_lock_holder_names_the_company(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    async with MappingLock(ledger, "customers", command="syncd run", company="CRONUS DE"):
        holder = await asyncio.to_thread(read_holder, ledger, "customers")
        assert holder is not None and holder.company == "CRONUS DE"
        assert "company CRONUS DE" in holder.describe()
        with pytest.raises(Exception, match="company CRONUS DE"):
            async with MappingLock(ledger, "customers"):
                pass


# -- against the sandbox ----------------------------------------------------------------------------


def two_companies(sb: Sandbox, **extra: Any) -> dict[str, Any]:
    """customers in CRONUS (businesscentral.company) and customers-de in CRONUS DE, named by its id."""
    return overrides(
        mappings=[
            {
                "name": "customers",
                "source": "contact",
                "target": "customers",
                "match": {"source": "code", "target": "number"},
            },
            {
                "name": "customers-de",
                "source": "contact",
                "target": "customers",
                "match": {"source": "code", "target": "number"},
                "company": sb.dataset.second_company_id,
            },
        ],
        **extra,
    )


def max_in_window(times: list[float], window: float) -> int:
    """The most requests that arrived within any ``window`` seconds."""
    best, q = 0, deque[float]()
    for t in sorted(times):
        q.append(t)
        while q[0] <= t - window:
            q.popleft()
        best = max(best, len(q))
    return best


@pytest.mark.slow
async def test_one_daemon_mirrors_two_companies_under_one_rate_limit(
    make_sandbox: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    limit, window = 30, 3.0  # the tenant's limit for this principal: 10 requests/s
    sb: Sandbox = await make_sandbox(contacts=60, persons=0, rate_limit=(limit, window))
    # syncd's one BC limit (8/s, at most 8 in any second) holds for both companies together; two
    # limiters, one per company, would send up to 16/s and meet 429s.
    cfg = write_config(
        sb,
        **two_companies(
            sb,
            businesscentral={"limits": {"requests_per_second": 8, "concurrency": 5}},
            schedule={"interval": "1h"},
        ),
    )
    daemon = await DaemonProcess.start(cfg)
    try:
        port = await daemon.port()
        await daemon.wait_log("run finished", mapping="customers", timeout=120)
        await daemon.wait_log("run finished", mapping="customers-de", timeout=120)

        # Each company's record with a key got the picture its own company's match chose.
        ds, expected = sb.dataset, sb.dataset.expected
        cronus, de = ds.company_id, ds.second_company_id
        de_by_number = expected["companies"][SECOND_COMPANY_NAME]["customers"]
        written = expected["mappings"]["customers"]["written"]
        assert len(written) > 20
        for source_id, cronus_id in written:
            cronus_rec = ds.bc.get_record(cronus, "customers", cronus_id)
            de_rec = ds.bc.get_record(de, "customers", de_by_number[cronus_rec.number])
            assert de_rec.id != cronus_rec.id and de_rec.number == cronus_rec.number
            assert cronus_rec.picture is not None and de_rec.picture is not None, source_id
            assert (
                hashlib.sha256(de_rec.picture.data).digest()
                == hashlib.sha256(cronus_rec.picture.data).digest()
            )

        # Every PATCH went to the company of the mapping that matched the record.
        patches = [e for e in sb.bc.log.entries if e.method == "PATCH" and e.status in (200, 204)]
        by_company = {cid: sum(1 for e in patches if cid in e.path.lower()) for cid in (cronus, de)}
        assert by_company[cronus] == by_company[de] == len(written), by_company
        async with Ledger.open(Path(tmp_path / "ledger.sqlite"), readonly=True) as ledger:
            de_items = [i async for i in ledger.iter_items("customers-de")]
            bound = await ledger.companies()
            runs = {r.mapping: r for r in await ledger.last_runs(limit=10)}
        de_ids = set(de_by_number.values())
        assert {i.target_id for i in de_items if i.status is Outcome.WRITTEN} <= de_ids
        assert bound["customers-de"].company == SECOND_COMPANY_NAME and bound["customers-de"].company_id == de
        assert bound["customers"].company == COMPANY_NAME
        assert (
            runs["customers-de"].company == SECOND_COMPANY_NAME and runs["customers-de"].outcome == "partial"
        )

        # One token and one company lookup for both companies; never above the one limit.
        api = [e for e in sb.bc.log.entries if "oauth2" not in e.route]
        tokens = [e for e in sb.bc.log.entries if "oauth2" in e.route and e.status == 200]
        assert len(tokens) == 1
        assert sum(1 for e in api if e.route.endswith("/companies")) == 1
        assert not [e for e in api if e.status == 429], "the sandbox throttled syncd"
        assert max_in_window([e.started for e in api], window) <= limit
        assert len(api) > limit * 2  # the run was long enough for the limit to matter

        # The company shows in the metrics, the status page and /status.json.
        _, metrics = await get(port, "/metrics")
        labels = f'company="{de}",mapping="customers-de",mode="incremental",outcome="partial"'
        assert f"syncd_runs_total{{{labels}}} 1.0" in metrics
        _, page = await get(port, "/")
        # its name, though the config gives its id
        assert f"contact → customers · {SECOND_COMPANY_NAME}" in page
        _, status_json = await get(port, "/status.json")
        data = json.loads(status_json)
        assert data["companies"]["customers-de"]["company"] == SECOND_COMPANY_NAME
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    finally:
        await daemon.kill()

    status = await syncd("status", "-c", str(cfg))
    assert status.code == 0, status.stderr
    assert SECOND_COMPANY_NAME in status.stdout and COMPANY_NAME in status.stdout


@pytest.mark.slow
async def test_a_company_named_by_name_and_by_id_in_two_mappings_is_refused_and_nothing_is_written(
    make_sandbox: Any, write_config: WriteConfig
) -> None:
    sb: Sandbox = await make_sandbox(contacts=20, persons=0)
    cfg = write_config(
        sb,
        **overrides(
            mappings=[
                {
                    "name": "customers",
                    "source": "contact",
                    "target": "customers",
                    "match": {"source": "code", "target": "number"},
                },
                {
                    "name": "by-id",
                    "source": "contact",
                    "target": "customers",
                    "match": {"source": "code", "target": "number"},
                    "company": sb.dataset.company_id,  # the same company as businesscentral.company
                },
            ]
        ),
    )
    once = await syncd("run", "--once", "-c", str(cfg))
    assert once.code == 1, once.stdout + once.stderr
    text = once.stdout + once.stderr
    assert "mappings 'customers' and 'by-id' both write pictures to customers" in text
    assert sb.dataset.company_id in text
    assert sb.bc.log.count(method="PATCH") == 0 and sb.bc.log.count(method="DELETE") == 0
    assert not any(e.route.endswith("/{entity_set}") for e in sb.bc.log.entries), "it listed BC anyway"

    one = await syncd("run", "--once", "--mapping", "by-id", "-c", str(cfg))
    assert one.code == 1 and "both write pictures" in one.stdout + one.stderr

    check = await syncd("check", "-c", str(cfg))
    assert check.code == 1, check.stdout
    assert "mappings 'customers' and 'by-id' both write to customers of company 'CRONUS'" in check.stdout

    daemon = await DaemonProcess.start(cfg)
    try:
        assert await daemon.wait(60) == 1
        assert daemon.find("cannot start"), daemon.tail()
    finally:
        await daemon.kill()
    assert sb.bc.log.count(method="PATCH") == 0


@pytest.mark.slow
async def test_check_names_each_company_and_its_permission(
    make_sandbox: Any, write_config: WriteConfig
) -> None:
    sb: Sandbox = await make_sandbox(contacts=5, persons=5)
    cfg_dict = two_companies(sb)
    cfg_dict["mappings"].append(
        {
            "name": "missing",
            "source": "person",
            "target": "employees",
            "match": {"source": "personNumber", "target": "number"},
            "company": "CRONUS FR",
        }
    )
    cfg = write_config(sb, **cfg_dict)
    result = await syncd("check", "-c", str(cfg))
    out = result.stdout
    assert result.code == 1, out
    assert f"✓ company 'CRONUS' (id {sb.dataset.company_id})" in out
    assert f"✓ company '{sb.dataset.second_company_id}' (id {sb.dataset.second_company_id})" in out
    assert "customers: read one page with pictures (company 'CRONUS')" in out
    assert "customers: read one page with pictures (company 'CRONUS DE')" in out
    assert "✗ Business Central company 'CRONUS FR' not found" in out
    assert "companies available: 'CRONUS', 'CRONUS DE'" in out


async def test_a_reload_that_adds_a_second_owner_is_rejected_and_the_old_config_keeps_syncing(
    make_sandbox: Any,
    write_config: WriteConfig,
    in_process: Any,
) -> None:
    sb: Sandbox = await make_sandbox(contacts=10, persons=0)
    one = {
        "name": "customers",
        "source": "contact",
        "target": "customers",
        "match": {"source": "code", "target": "number"},
    }
    cfg = write_config(sb, **overrides(schedule={"interval": "1h"}, mappings=[one]))
    with structlog.testing.capture_logs() as logs:
        d = in_process(cfg)
        await d.ready()
        await eventually(lambda: d.daemon.last_outcomes().get("customers") is not None, 30, "first run")
        patches = sb.bc.log.count(method="PATCH")
        by_id = {**one, "name": "by-id", "company": sb.dataset.company_id.upper()}
        write_config(sb, **overrides(schedule={"interval": "1h"}, mappings=[one, by_id]))
        d.daemon.request_reload()
        await eventually(lambda: d.daemon.reloads == 1, 20, "the reload")
        rejected = [e for e in logs if e["event"] == "reload rejected; the running config stays in effect"]
        assert rejected and "mappings 'customers' and 'by-id' both write pictures" in rejected[0]["error"]
        assert [m.name for m in d.daemon.config.mappings] == ["customers"]
        assert sb.bc.log.count(method="PATCH") == patches
    assert await d.stop() == 0
