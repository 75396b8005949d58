"""Server text is data, never markup, control codes or a secret (issue #13, point 8).

A SuperOffice (here: a hostile proxy in front of the sandbox) answers with error messages that echo the
credential it was sent and carry Rich markup and terminal escape sequences. syncd stores them redacted,
shows them redacted in ``syncd status``, ``/status.json``, the status page and ``syncd ledger export``,
and prints them literally: ``[/b]`` does not crash the report, ``[link=…]`` does not become a link,
and no control character reaches the terminal.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp.test_utils import TestClient, TestServer

from syncd.config import load_config
from syncd.ledger import Ledger
from syncd.sandbox.server import Sandbox
from syncd.web import make_app
from tests.support.e2e import syncd, write_config
from tests.support.so_proxy import SuperOfficeProxy
from tests.support.web import FakeSource

SO_PASSWORD = "sandbox-so-password"
BASIC = base64.b64encode(f"syncd:{SO_PASSWORD}".encode()).decode()
MARKUP = "[/b] [link=https://evil.example/]click here[/link] [bold red]LOUD"
ESCAPES = "\x1b[2J\x1b]8;;https://evil.example/\x07x\x1b]8;;\x07\r\x08\u202e"
HOSTILE = f"Access denied for {{auth}} {MARKUP} {ESCAPES} ticket 7T:dGhpcyBpcyBhIHRpY2tldA== end"


def _masked(text: str) -> bool:
    """The echoed Authorization header is there, masked (as a known secret, or as a Basic credential)."""
    return re.search(r"Access denied for (?:Basic )?\*{10} ", text) is not None


def _no_secret(text: str) -> None:
    assert BASIC not in text and SO_PASSWORD not in text
    assert "7T:dGhpcyBpcyBhIHRpY2tldA==" not in text


def _no_control(text: str) -> None:
    bad = [c for c in text if (ord(c) < 32 and c not in "\n") or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]
    assert not bad, bad


async def _config(sb: Sandbox, proxy: SuperOfficeProxy, tmp_path: Path) -> Path:
    base = proxy.url + urlsplit(sb.so_url).path
    mapping = sb.config()["mappings"][0]
    return write_config(sb, tmp_path, mappings=[mapping], superoffice={"base_url": base})


async def test_a_run_error_with_markup_and_an_echoed_credential_is_printed_literally_and_redacted(
    tmp_path: Path,
) -> None:
    async with (
        Sandbox(seed=2, contacts=10, persons=0) as sb,
        SuperOfficeProxy(urlsplit(sb.so_url)._replace(path="").geturl()) as proxy,
    ):
        path = await _config(sb, proxy, tmp_path)
        proxy.knobs.error_text, proxy.knobs.error_on = HOSTILE, "list"
        run = await syncd("run", "--once", "-c", str(path), "--log-json")
        assert run.code == 3, run.stderr  # the API refused: retryable, not an internal error (70)
        out = run.stdout + run.stderr
        _no_secret(out)
        _no_control(out)
        flat = " ".join(run.stdout.split())
        assert _masked(flat)
        assert "[/b] [link=https://evil.example/]click here[/link] [bold red]LOUD" in flat  # literally
        assert "ticket **********" in flat

        status = await syncd("status", "-c", str(path))
        assert status.code == 0, status.stderr
        _no_secret(status.stdout)
        _no_control(status.stdout)
        assert MARKUP in " ".join(status.stdout.split())  # the last run's error, as text

        for args in (("status", "--json"), ("ledger", "export")):
            res = await syncd(*args, "-c", str(path))
            assert res.code == 0, res.stderr
            _no_secret(res.stdout)
            assert _masked(res.stdout)


async def test_item_errors_are_stored_redacted_and_shown_redacted_everywhere(tmp_path: Path) -> None:
    async with (
        Sandbox(seed=2, contacts=10, persons=0) as sb,
        SuperOfficeProxy(urlsplit(sb.so_url)._replace(path="").geturl()) as proxy,
    ):
        path = await _config(sb, proxy, tmp_path)
        proxy.knobs.error_text = HOSTILE  # every picture download fails with it
        run = await syncd("run", "--once", "-c", str(path), "--log-json")
        assert run.code == 2, run.stderr
        _no_secret(run.stdout + run.stderr)
        _no_control(run.stdout)
        assert "[link=https://evil.example/]click here[/link]" in " ".join(run.stdout.split())

        # What the ledger file holds, read without syncd: the echoed credential never got there.
        with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
            stored = [
                str(v)
                for sql in ("SELECT error FROM items", "SELECT detail FROM issues", "SELECT error FROM runs")
                for (v,) in db.execute(sql)
                if v
            ]
        assert any(_masked(s) for s in stored)
        for s in stored:
            _no_secret(s)
            _no_control(s)

        for args in (("status",), ("status", "--json"), ("ledger", "export")):
            res = await syncd(*args, "-c", str(path))
            assert res.code == 0, res.stderr
            _no_secret(res.stdout)
            _no_control(res.stdout)

        config = load_config(path)
        async with (
            Ledger.open(config.ledger, readonly=True) as ledger,
            TestClient(TestServer(make_app(FakeSource(config, ledger)))) as client,
        ):
            for route in ("/status.json", "/"):
                resp = await client.get(route)
                assert resp.status == 200
                text = await resp.text()
                _no_secret(text)
                _no_control(text)
            data = json.loads(await (await client.get("/status.json")).text())
            assert any(_masked(i["detail"]) for i in data["issues"] if i["kind"] == "failed")
