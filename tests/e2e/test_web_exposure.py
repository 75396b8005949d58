"""The status endpoint answers only to the names it serves, and ``server.token`` guards what shows data
(issue #13, point 9). Requests go over a real socket to the real listener (:class:`syncd.web.WebServer`),
with the ``Host:`` header a DNS-rebinding page in a local browser would send."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from syncd.config import Config, parse_config
from syncd.errors import ConfigError
from syncd.ledger import Ledger
from syncd.web import WebServer
from tests.support.config import WriteConfig
from tests.support.daemon import CUSTOMERS_ONLY, DaemonProcess, overrides
from tests.support.web import FakeSource, make_config

TOKEN = "status-token-0123456789"
DATA_ROUTES = ("/", "/status.json")
PROBE_ROUTES = ("/healthz", "/readyz", "/metrics")


def _config(ledger: Path, **server: object) -> Config:
    data = yaml.safe_load(yaml.safe_dump(make_config(ledger).model_dump(mode="json")))
    # model_dump masks secrets; put the test's own back
    data["superoffice"]["auth"]["password"] = "so-password"
    data["businesscentral"]["auth"]["client_secret"] = "bc-secret"
    data["server"] = {**data["server"], **server}
    if data["server"].get("token") is None:
        data["server"].pop("token", None)
    return parse_config(yaml.safe_dump(data), env={"STATUS_TOKEN": TOKEN})


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with Ledger.open(tmp_path / "ledger.sqlite") as led:
        run = await led.start_run("customers", "incremental")
        await led.finish_run(run, {"written": 1}, "ok")
        await led.add_recent_change(
            "customers", "contact", 1, "C00001", source_thumb=b"\xff\xd8\xff thumb", output_thumb=None
        )
        yield led


async def _serve(source: FakeSource) -> tuple[WebServer, str]:
    server = WebServer(source)
    port = await server.start("127.0.0.1", 0)
    return server, f"http://127.0.0.1:{port}"


async def _get(url: str, path: str, **headers: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + path, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.text(errors="replace"), resp


async def test_a_request_for_another_host_name_is_refused_on_every_route(
    ledger: Ledger, tmp_path: Path
) -> None:
    source = FakeSource(_config(tmp_path / "ledger.sqlite", allowed_hosts=["syncd.example.org"]), ledger)
    server, url = await _serve(source)
    port = url.rsplit(":", 1)[1]
    try:
        for path in (*DATA_ROUTES, "/thumb/1/source", *PROBE_ROUTES):
            for evil in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.evil.example:{port}"):
                status, text, _ = await _get(url, path, Host=evil)
                assert status == 421, (path, evil, status)
                assert "C00001" not in text and "customers" not in text
        for good in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            "LOCALHOST",
            f"[::1]:{port}",
            f"syncd.example.org:{port}",
            "syncd.example.org.",
        ):
            status, text, _ = await _get(url, "/status.json", Host=good)
            assert status == 200, (good, status)
            assert "customers" in text
        status, _, resp = await _get(url, "/thumb/1/source", Host=f"localhost:{port}")
        assert status == 200 and resp.content_type == "image/jpeg"
    finally:
        await server.stop()


async def test_server_token_guards_the_page_json_and_thumbnails_but_not_the_probes(
    ledger: Ledger, tmp_path: Path
) -> None:
    config = _config(tmp_path / "ledger.sqlite", token="${STATUS_TOKEN}")
    assert config.server.token is not None and TOKEN not in repr(config.server)
    server, url = await _serve(FakeSource(config, ledger))
    try:
        for path in (*DATA_ROUTES, "/thumb/1/source"):
            status, text, resp = await _get(url, path)
            assert status == 401, path
            assert "C00001" not in text and "customers" not in text
            assert any(v.startswith("Basic") for v in resp.headers.getall("WWW-Authenticate"))
            for wrong in ("Bearer nope", f"Bearer {TOKEN}x", "Basic !!!", f"Token {TOKEN}"):
                assert (await _get(url, path, Authorization=wrong))[0] == 401, (path, wrong)
            assert (await _get(url, path, Authorization=f"Bearer {TOKEN}"))[0] == 200, path
            browser = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
            assert (await _get(url, path, Authorization=f"Basic {browser}"))[0] == 200, path
        for path in PROBE_ROUTES:
            assert (await _get(url, path))[0] == 200, path
        # the token does not open the door to another host name
        assert (await _get(url, "/", Host="attacker.example", Authorization=f"Bearer {TOKEN}"))[0] == 421
    finally:
        await server.stop()


def test_allowed_hosts_take_names_only_and_a_token_must_be_long(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token"):
        _config(tmp_path / "ledger.sqlite", token="short")
    with pytest.raises(ConfigError, match="allowed_hosts"):
        _config(tmp_path / "ledger.sqlite", allowed_hosts=["http://syncd.example.org/"])
    config = _config(tmp_path / "ledger.sqlite", allowed_hosts=["Syncd.Example.org.", "[FD00::1]"])
    assert config.server.allowed_hosts == ["syncd.example.org", "[fd00::1]"]


async def test_the_daemon_serves_its_status_only_to_its_names_and_with_its_token(
    make_sandbox: Any, write_config: WriteConfig
) -> None:
    """The same through ``syncd run`` (the daemon), the token given as ``${ENV}``."""
    sb = await make_sandbox(contacts=8, persons=0)
    server = {"allowed_hosts": ["syncd.example.org"], "token": "${SYNCD_STATUS_TOKEN}"}
    cfg = write_config(sb, **overrides(server=server, schedule={"interval": "1h"}, **CUSTOMERS_ONLY))
    daemon = await DaemonProcess.start(cfg, {"SYNCD_STATUS_TOKEN": TOKEN})
    try:
        url = f"http://127.0.0.1:{await daemon.port()}"
        await daemon.wait_log("run finished", mapping="customers")
        bearer = f"Bearer {TOKEN}"
        assert (await _get(url, "/status.json", Host="rebound.example", Authorization=bearer))[0] == 421
        assert (await _get(url, "/status.json"))[0] == 401
        status, text, _ = await _get(url, "/status.json", Host="syncd.example.org", Authorization=bearer)
        assert status == 200 and '"customers"' in text
        for path in PROBE_ROUTES:
            assert (await _get(url, path))[0] == 200, path
        assert TOKEN not in json.dumps(daemon.logs)
    finally:
        await daemon.kill()
