"""Secrets never leave syncd: not in logs, error messages, ``--dry-run`` output, ``syncd status``, the
ledger file, or the daemon's status page.

Every command runs with known secret strings in its config — SuperOffice password, application token,
system user token and private key, the Business Central client secret — and at debug level. Afterwards
everything captured (stdout, stderr, the pages the daemon served) and the bytes of the ledger files are
searched for those strings and for the credentials minted during the test (BC access tokens, SuperOffice
tickets), whole and in their encoded forms (Basic header, URL/JSON escaping). Failure paths (wrong
secret, wrong system user token) are part of it: their messages are where secrets like to leak.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from syncd.sandbox.server import SANDBOX_BC_CLIENT_ID, Sandbox
from syncd.sandbox.superoffice import (
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
    SANDBOX_SO_USER,
    sandbox_app_private_key_pem,
)
from tests.support.e2e import Result, syncd, write_config
from tests.support.resilience import customers_only, finish

pytestmark = pytest.mark.slow

SO_PASSWORD = "So-Pa55w0rd-only-in-config-4f1e"
BC_SECRET = "Bc-Cl1ent-Secret-only-in-config-9d2a"
WRONG_BC_SECRET = "Wr0ng-Bc-Secret-typed-by-hand-77c3"
WRONG_SO_PASSWORD = "Wr0ng-So-Password-typed-by-hand-1a5b"
WRONG_SYSTEM_USER_TOKEN = "syncd-sandbox-Wr0ngSystemUserToken-e8"


def variants(secret: str) -> set[str]:
    """The forms a leaked secret could take in text: as is, URL-quoted, JSON-escaped."""
    return {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}


async def start_daemon(cfg: Path) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    """``syncd run`` (the daemon) on a free port; returns it, its status page URL and its stderr so far."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "run",
        "--log-level",
        "debug",
        "-c",
        str(cfg),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    url = None
    async with asyncio.timeout(60):
        while True:
            raw = await proc.stderr.readline()
            assert raw, "the daemon exited: " + "".join(lines)
            line = raw.decode()
            lines.append(line)
            event = _json(line)
            if event.get("event") == "http endpoint listening":
                url = str(event["url"])
            if event.get("event") == "run finished" and url:
                return proc, url, lines


def _json(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def test_no_secret_appears_in_any_output_the_ledger_or_the_status_page(tmp_path: Path) -> None:
    async with Sandbox(
        seed=71,
        contacts=14,
        persons=0,
        users={SANDBOX_SO_USER: SO_PASSWORD},
        clients={SANDBOX_BC_CLIENT_ID: BC_SECRET},
    ) as sb:

        def config(name: str, so_auth: dict[str, Any], bc_secret: str = BC_SECRET, **extra: Any) -> Path:
            ledger = str(tmp_path / name.replace(".yaml", "-ledger.sqlite"))  # one each: no lock waits
            path = write_config(
                sb, tmp_path, name, mappings=customers_only(sb), log_level="debug", ledger=ledger, **extra
            )
            cfg = yaml.safe_load(path.read_text())
            cfg["superoffice"]["auth"] = so_auth
            cfg["businesscentral"]["auth"]["client_secret"] = bc_secret
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            return path

        basic_auth = {"type": "basic", "username": SANDBOX_SO_USER, "password": SO_PASSWORD}
        server = {"enabled": True, "host": "127.0.0.1", "port": 0}
        system_user = config("system-user.yaml", sb.so_auth("system_user"), server=server)
        basic = config("basic.yaml", basic_auth)
        wrong_bc = config("wrong-bc.yaml", basic_auth, WRONG_BC_SECRET)
        wrong_so = config("wrong-so.yaml", {**basic_auth, "password": WRONG_SO_PASSWORD})
        wrong_su = config(
            "wrong-system-user.yaml",
            {**sb.so_auth("system_user"), "system_user_token": WRONG_SYSTEM_USER_TOKEN},
        )
        for path, secret in (
            (system_user, SANDBOX_SO_SYSTEM_USER_TOKEN),
            (basic, SO_PASSWORD),
            (wrong_bc, WRONG_BC_SECRET),
            (wrong_so, WRONG_SO_PASSWORD),
            (wrong_su, WRONG_SYSTEM_USER_TOKEN),
        ):
            assert secret in path.read_text()  # the secrets really are in the configs, literally

        outputs: dict[str, Result] = {}

        async def run(name: str, *args: str, codes: tuple[int, ...]) -> None:
            result = await syncd(*args)
            assert result.code in codes, (name, result.code, result.stderr[-2000:])
            outputs[name] = result

        su, ba = str(system_user), str(basic)
        # Independent commands run side by side.
        await asyncio.gather(
            run("run", "run", "--once", "--log-level", "debug", "-c", su, codes=(0,)),
            run("run-json", "run", "--once", "--json", "--log-json", "-c", ba, codes=(0,)),
            run("wrong-bc-run", "run", "--once", "--log-level", "debug", "-c", str(wrong_bc), codes=(5,)),
            run("wrong-bc-check", "check", "-c", str(wrong_bc), codes=(5,)),
            run("wrong-so-run", "run", "--once", "--log-level", "debug", "-c", str(wrong_so), codes=(5,)),
            run("wrong-su-run", "run", "--once", "--log-level", "debug", "-c", str(wrong_su), codes=(5,)),
            run("wrong-su-check", "check", "-c", str(wrong_su), codes=(5,)),
        )
        await asyncio.gather(
            run("dry-run", "run", "--once", "--dry-run", "--log-level", "debug", "-c", su, codes=(0,)),
            run("check", "check", "--log-level", "debug", "-c", su, codes=(0,)),
            run("status", "status", "-c", su, codes=(0,)),
            run("status-json", "status", "--json", "-c", su, codes=(0,)),
            run("export", "ledger", "export", "-c", su, codes=(0,)),
        )

        # The daemon: its log, and every page of its HTTP endpoint.
        daemon, url, daemon_log = await start_daemon(system_user)
        pages: dict[str, str] = {}
        try:
            async with aiohttp.ClientSession() as http:
                for page in ("", "status.json", "metrics", "readyz", "healthz"):
                    async with http.get(url + page) as resp:
                        pages[page or "/"] = await resp.text()
                        assert resp.status == 200, (page, pages[page or "/"][:500])
        finally:
            daemon.send_signal(signal.SIGTERM)
            rest = await finish(daemon, timeout=60)
        outputs["daemon"] = Result(rest.code, rest.stdout, "".join(daemon_log) + rest.stderr)
        assert "customers" in pages["/"] and "customers" in pages["status.json"]

        # What must never show: the configured secrets and everything derived from them or minted.
        pem = sandbox_app_private_key_pem().decode().splitlines()
        secrets = {
            SO_PASSWORD,
            BC_SECRET,
            WRONG_BC_SECRET,
            WRONG_SO_PASSWORD,
            WRONG_SYSTEM_USER_TOKEN,
            SANDBOX_SO_APP_TOKEN,
            SANDBOX_SO_SYSTEM_USER_TOKEN,
            base64.b64encode(f"{SANDBOX_SO_USER}:{SO_PASSWORD}".encode()).decode(),
            *(line for line in pem if len(line) > 40),  # the private key's base64 body lines
        }
        minted = set(sb.bc.entra._tokens) | {t for t in sb.so._grants if t.startswith(("7T:", "8A:"))}
        assert any(t.startswith("7T:") for t in minted), "a SuperOffice ticket was issued"
        assert any(t.count(".") == 2 for t in minted), "a BC access token was issued"
        secrets |= minted
        secrets |= {t.rsplit(".", 1)[1] for t in minted if t.count(".") == 2}  # JWT signatures alone

        haystacks = {
            f"{name} {stream}": text
            for name, r in outputs.items()
            for stream, text in (("stdout", r.stdout), ("stderr", r.stderr))
        }
        haystacks |= {f"page {name}": text for name, text in pages.items()}
        for f in tmp_path.glob("*ledger.sqlite*"):
            if f.is_file():
                haystacks[f"file {f.name}"] = f.read_bytes().decode("latin-1")
        for f in tmp_path.glob("*ledger.sqlite.locks/*"):
            haystacks[f"file {f.name}"] = f.read_text()
        assert "file system-user-ledger.sqlite" in haystacks and "file basic-ledger.sqlite" in haystacks

        def found(text: str) -> list[str]:
            return [secret[:12] + "…" for secret in secrets for form in variants(secret) if form in text]

        # Positive control: the search does find them where they are meant to be.
        assert len(found(system_user.read_text() + basic.read_text())) >= 5

        leaks = [(where, hit) for where, text in haystacks.items() for hit in found(text)]
        assert not leaks, leaks
        # The failure paths did say what was wrong (so the search above looked at real messages).
        assert "client" in (outputs["wrong-bc-run"].stdout + outputs["wrong-bc-run"].stderr).lower()
        assert len(haystacks) > 30
