"""Helpers shared by the resilience tests (tests/resilience/): reading the sandbox's request log
and the ledger file the way a reviewer would, and running the real CLI as a subprocess that a test may
kill at any moment.

Everything here reads state from the outside (the sandbox's log and data, the SQLite file); nothing
reaches into a running syncd.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.sandbox.common import LoggedRequest
from syncd.sandbox.server import Sandbox
from tests.support.e2e import Result

_TARGET_IN_PATH = re.compile(r"/(customers|vendors|employees|items)\(([0-9a-fA-F-]{36})\)")


def customers_only(sb: Sandbox, **mapping_overrides: Any) -> list[dict[str, Any]]:
    """The ``mappings:`` list with just the sandbox's customers mapping (contact code ↔ customer number)."""
    mapping: dict[str, Any] = dict(sb.config()["mappings"][0])
    mapping.update(mapping_overrides)
    return [mapping]


def resolve_pictures(sb: Sandbox) -> None:
    """Make every lazily generated SuperOffice picture now, so the emulator answers at once during a run
    (picture generation in the test process would delay its request log's timestamps)."""
    for table in (sb.dataset.so.contacts, sb.dataset.so.persons):
        for entity in table.values():
            if entity.image is not None:
                entity.image.content()


def target_in_path(path: str) -> str | None:
    """The BC record id a request path is about (``…/customers(<id>)/picture…``), if any."""
    m = _TARGET_IN_PATH.search(path)
    return m.group(2).lower() if m else None


def target_of(entry: LoggedRequest) -> str | None:
    """The BC record id a logged request is about, if any."""
    return target_in_path(entry.path)


def picture_writes(sb: Sandbox, since_seq: int = 0) -> Counter[str]:
    """Successful picture uploads (PATCH answered 204) per BC record id, from the emulator's log."""
    return Counter(
        t
        for e in sb.bc.log.entries
        if e.seq > since_seq and e.method == "PATCH" and e.status == 204 and (t := target_of(e))
    )


def picture_patches(sb: Sandbox, since_seq: int = 0) -> Counter[str]:
    """Every PATCH request (whatever the answer) per BC record id."""
    return Counter(
        t for e in sb.bc.log.entries if e.seq > since_seq and e.method == "PATCH" and (t := target_of(e))
    )


def image_downloads(sb: Sandbox, since_seq: int = 0) -> Counter[int]:
    """GET …/{Contact|Person}/{id}/Image requests per SuperOffice id, from the emulator's log."""
    out: Counter[int] = Counter()
    for e in sb.so.log.entries:
        m = re.search(r"/(?:contact|person)/(\d+)/image$", e.path, re.IGNORECASE)
        if e.seq > since_seq and e.method == "GET" and m:
            out[int(m.group(1))] += 1
    return out


def last_seq(sb: Sandbox, api: str = "bc") -> int:
    """The highest sequence number logged so far. Entries are logged when they finish, so a request
    held open (a slow handler, a test's middleware) is logged after later ones: not ``entries[-1]``."""
    entries = (sb.bc if api == "bc" else sb.so).log.entries
    return max((e.seq for e in entries), default=0)


@dataclass(frozen=True)
class GateViolation:
    retry_after: LoggedRequest  # the reply that carried Retry-After
    early: LoggedRequest  # a request that started before the instant it allowed
    kind: str  # "retry" (the same request sent again) or "other"


def retry_after_violations(entries: Sequence[LoggedRequest], in_flight: float) -> list[GateViolation]:
    """Requests that started before a Retry-After allowed, for one API's log.

    For every reply with ``retry_after_until``:
    - its own retry (the next request with the same method, path and query) must not start before that
      instant — no excuse possible, the client sent it after reading the reply;
    - no other request may start in ``(finished + in_flight, retry_after_until)``. A request that arrives
      within ``in_flight`` seconds after the reply left the server may have left the client before the
      reply reached it (other workers' requests already on their way); it cannot have honoured it.
    """
    out: list[GateViolation] = []
    ordered = sorted(entries, key=lambda e: e.started)
    for e in ordered:
        until = e.retry_after_until
        if until is None:
            continue
        retry = next(
            (
                f
                for f in ordered
                if f.started > e.started
                and f.seq != e.seq
                and (f.method, f.path, f.query) == (e.method, e.path, e.query)
            ),
            None,
        )
        if retry is not None and retry.started < until:
            out.append(GateViolation(e, retry, "retry"))
        for f in ordered:
            if f is retry or f.seq == e.seq:
                continue
            if e.finished + in_flight < f.started < until:
                out.append(GateViolation(e, f, "other"))
    return out


# -- the ledger file, read directly -----------------------------------------------------------------------


def ledger_rows(path: Path, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        return list(con.execute(sql, tuple(params)))
    finally:
        con.close()


def integrity_check(path: Path) -> str:
    """``PRAGMA integrity_check`` on the file as a crashed process left it (WAL replayed on open)."""
    con = sqlite3.connect(path)
    try:
        return "\n".join(str(r[0]) for r in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()


def committed_writes(path: Path, mapping: str) -> dict[int, str]:
    """Items whose write is committed in the ledger: source id → BC record id."""
    rows = ledger_rows(
        path,
        "SELECT source_id, target_id FROM items"
        " WHERE mapping = ? AND status = 'written' AND wrote_picture = 1",
        (mapping,),
    )
    return {int(r["source_id"]): str(r["target_id"]).lower() for r in rows}


# -- the CLI as a process a test controls ----------------------------------------------------------------


async def start_syncd(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """``python -m syncd ARGS`` with piped output; the caller waits, or kills it."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 120) -> Result:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())
