"""Sandbox (both emulators in-process), its syncd config, and `syncd sandbox` (serve/main) as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from syncd.config import load_config
from syncd.sandbox.server import SO_APP_KEY_FILE, SO_LOGIN_PUBLIC_KEY_FILE, Sandbox, main
from syncd.sandbox.superoffice import (
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
    sign_system_user_token,
)
from tests.support.so_fixtures import basic


async def bc_token(http: aiohttp.ClientSession, cfg: dict[str, Any]) -> str:
    auth = cfg["businesscentral"]["auth"]
    form = {
        "grant_type": "client_credentials",
        "client_id": auth["client_id"],
        "client_secret": auth["client_secret"],
        "scope": "https://api.businesscentral.dynamics.com/.default",
    }
    async with http.post(auth["token_url"], data=form) as r:
        assert r.status == 200, await r.text()
        token: str = (await r.json())["access_token"]
    return token


async def test_sandbox_serves_both_apis_with_the_config_it_describes(tmp_path: Path) -> None:
    async with Sandbox(seed=2, contacts=30, persons=20) as sb, aiohttp.ClientSession() as http:
        assert sb.so_url == f"http://127.0.0.1:{sb.so_port}/Cust00001/api/v1"
        assert sb.bc_url == f"http://127.0.0.1:{sb.bc_port}/v2.0/sandbox-tenant/production/api/v2.0"
        assert sb.token_url == f"http://127.0.0.1:{sb.bc_port}/sandbox-tenant/oauth2/v2.0/token"
        cfg = sb.config(ledger="./l.sqlite")
        assert cfg["superoffice"] == {
            "base_url": sb.so_url,
            "auth": {"type": "basic", "username": "syncd", "password": "sandbox-so-password"},
        }
        assert cfg["businesscentral"]["company"] == "CRONUS"
        assert [m["name"] for m in cfg["mappings"]] == ["customers", "staff"]
        so_auth = cfg["superoffice"]["auth"]
        headers = {"Authorization": basic(so_auth["username"], so_auth["password"])}
        async with http.get(f"{cfg['superoffice']['base_url']}/Contact", headers=headers) as r:
            assert r.status == 200
            assert len((await r.json())["value"]) == 30
        token = await bc_token(http, cfg)
        async with http.get(
            f"{cfg['businesscentral']['base_url']}/companies", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200
            assert [c["name"] for c in (await r.json())["value"]] == ["CRONUS", "CRONUS DE"]
        path = tmp_path / "syncd.yaml"
        path.write_text(yaml.safe_dump(cfg))
        load_config(path)  # syncd's own loader accepts it


async def test_written_config_and_system_user_key_work_together(tmp_path: Path) -> None:
    async with Sandbox(contacts=5, persons=5) as sb, aiohttp.ClientSession() as http:
        written = await asyncio.to_thread(sb.write_config, tmp_path / "conf" / "syncd.yaml")
        path, key_file, login_file = written
        assert (key_file.name, login_file.name) == (SO_APP_KEY_FILE, SO_LOGIN_PUBLIC_KEY_FILE)
        assert path.stat().st_mode & 0o077 == 0 and key_file.stat().st_mode & 0o077 == 0
        config = load_config(path)
        assert config is not None
        assert "type: system_user" in path.read_text()
        su = sb.config(so_auth="system_user", private_key=f"file:{SO_APP_KEY_FILE}")["superoffice"]["auth"]
        assert su["login_url"] == f"{sb.so_origin}/Login"
        assert su["jwt_public_key"] == login_file.read_text()
        sys_path = tmp_path / "conf" / "system-user.yaml"
        sys_path.write_text(
            yaml.safe_dump(sb.config(so_auth="system_user", private_key=f"file:{SO_APP_KEY_FILE}"))
        )
        sys_path.chmod(0o600)
        load_config(sys_path)
        signed = sign_system_user_token(SANDBOX_SO_SYSTEM_USER_TOKEN, key_file.read_bytes())
        body = {
            "SignedSystemToken": signed,
            "ApplicationToken": SANDBOX_SO_APP_TOKEN,
            "ContextIdentifier": "Cust00001",
            "ReturnTokenType": "JWT",
        }
        async with http.post(f"{su['login_url']}/api/PartnerSystemUser/Authenticate", json=body) as r:
            assert (await r.json())["IsSuccessful"] is True
        assert "BEGIN PUBLIC KEY" in login_file.read_text()


async def test_sandbox_routes_options_to_the_right_emulator() -> None:
    sb = Sandbox(
        contacts=2,
        persons=0,
        image_updates_touch_updated_date=True,
        ticket_lifetime=5.0,
        bc_tenant="other-tenant",
    )
    assert sb.so.image_updates_touch_updated_date is True and sb.so.ticket_lifetime == 5.0
    assert sb.bc.tenant == "other-tenant" and "other-tenant" in sb.bc_url
    with pytest.raises(TypeError, match="both"):
        Sandbox(contacts=1, persons=0, tenant="x")
    with pytest.raises(TypeError, match="unknown"):
        Sandbox(contacts=1, persons=0, bogus=1)


async def test_a_taken_port_fails_start_and_leaves_nothing_listening() -> None:
    async with Sandbox(contacts=1, persons=0) as first:
        second = Sandbox(contacts=1, persons=0, so_port=first.so_port)
        with pytest.raises(OSError):
            await second.start()
        assert second._runners == []


def test_main_usage_errors_exit_1_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bogus"]) == 1
    assert main(["--contacts", "0", "--persons", "3"]) == 1
    assert main(["--help"]) == 0
    assert "--write-config" in capsys.readouterr().out


async def _read_until(stream: asyncio.StreamReader, marker: str, timeout: float = 30) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                break
            seen += line.decode()
    return seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_prints_credentials_writes_config_and_stops_on_signal(tmp_path: Path, sig: int) -> None:
    cfg_path = tmp_path / "sandbox.yaml"
    args = [
        "--so-port",
        "0",
        "--bc-port",
        "0",
        "--contacts",
        "12",
        "--persons",
        "6",
        "--seed",
        "3",
        "--write-config",
        str(cfg_path),
    ]
    code = f"from syncd.sandbox.server import main; raise SystemExit(main({args!r}))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        out = await _read_until(proc.stdout, "Ready.")
        assert "Ready." in out, out
        cfg = yaml.safe_load(cfg_path.read_text())
        so_url = cfg["superoffice"]["base_url"]
        assert so_url in out and cfg["businesscentral"]["base_url"] in out
        for needle in (
            "sandbox-so-password",
            SANDBOX_SO_APP_TOKEN,
            SANDBOX_SO_SYSTEM_USER_TOKEN,
            SO_APP_KEY_FILE,
            "sandbox-bc-secret",
            "00000000-0000-0000-0000-00000000c11e",
        ):
            assert needle in out
        assert (tmp_path / SO_APP_KEY_FILE).exists()
        async with aiohttp.ClientSession() as http:
            auth = cfg["superoffice"]["auth"]
            async with http.get(
                f"{so_url}/Person", headers={"Authorization": basic(auth["username"], auth["password"])}
            ) as r:
                assert r.status == 200
                assert len((await r.json())["value"]) == 6
        proc.send_signal(sig)
        async with asyncio.timeout(20):
            rc = await proc.wait()
        assert rc == 0
        assert "stopped" in (await proc.stdout.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sandbox_command_takes_fault_knobs_and_bc_rate_limit_at_start(tmp_path: Path) -> None:
    """`syncd sandbox --faults JSON --bc-rate-limit N/S`: the knobs are live as soon as it is ready."""
    import asyncio
    import json as jsonlib
    import signal
    import sys

    import aiohttp

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "sandbox",
        "--so-port",
        "0",
        "--bc-port",
        "0",
        "--contacts",
        "5",
        "--persons",
        "0",
        "--write-config",
        str(tmp_path / "c.yaml"),
        "--faults",
        jsonlib.dumps({"rate_429": 1.0, "retry_after": "http-date"}),
        "--bc-rate-limit",
        "600/30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        text = ""
        while "Ready" not in text:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "sandbox exited early"
            text += line.decode()
        cfg = (tmp_path / "c.yaml").read_text()
        so_url = next(w for w in cfg.split() if "/Cust00001/api/v1" in w)
        bc_origin = next(w for w in cfg.split() if "/api/v2.0" in w).split("/v2.0/")[0]
        async with aiohttp.ClientSession() as s:
            async with s.get(
                so_url + "/Contact", headers={"Authorization": basic("syncd", "sandbox-so-password")}
            ) as r:
                assert r.status == 429
                assert r.headers["Retry-After"].endswith("GMT")
            async with s.get(bc_origin + "/_sandbox/bc/limits") as r:
                limits = jsonlib.dumps(await r.json())
                assert "600" in limits and "30" in limits
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0


def test_sandbox_command_rejects_bad_fault_knobs() -> None:
    from syncd.sandbox.server import main

    assert main(["--faults", '{"rate_teapot": 1}']) == 1
    assert main(["--bc-rate-limit", "lots"]) == 1
