"""Someone edits a Business Central picture between syncd's listing and its PATCH.

BC answers the PATCH (sent with ``If-Match`` = the etag we listed) with 409 ``Request_EntityChanged`` —
or 412 with the emulator's ``stale_etag_status`` knob. syncd must re-read the picture and its etag, apply
``on_target_changed`` and never write with the stale etag:

- ``overwrite``: our picture ends up in BC, written with the fresh etag;
- ``keep``: their picture stays, now and on the next run.

The edit is made deterministic with a small middleware added to the BC emulator's app: when the PATCH
for a chosen record arrives, it first changes that record's picture in the emulator's state (exactly what
an edit by hand in BC does) and then lets the emulator answer as it always would. It fakes no response.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from syncd.sandbox.server import Sandbox
from tests.support.e2e import syncd, write_config
from tests.support.resilience import customers_only, ledger_rows, target_in_path, target_of

pytestmark = pytest.mark.slow


def theirs(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "PNG")
    return out.getvalue()


@dataclass
class EditInBC:
    """Edits a record's BC picture when syncd's write (PATCH, or DELETE to clear) for it arrives, then lets
    the emulator answer; records the If-Match each write carried. A picture of ``None`` clears it by hand.
    """

    sb: Sandbox
    once: dict[str, bytes | None] = field(default_factory=dict)  # before the first write for a record
    always: dict[str, bytes | None] = field(default_factory=dict)  # … before every write for it
    methods: tuple[str, ...] = ("PATCH",)
    if_match: dict[str, list[str]] = field(default_factory=dict)  # record id → If-Match of each write
    etag_after_edit: dict[str, str] = field(default_factory=dict)

    def install(self) -> None:
        make_app = self.sb.bc.make_app

        def patched() -> web.Application:
            app = make_app()
            app.middlewares.append(self.middleware)
            return app

        self.sb.bc.make_app = patched  # type: ignore[method-assign]

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        rid = target_in_path(request.path)
        if request.method in self.methods and rid is not None:
            self.if_match.setdefault(rid, []).append(request.headers.get("If-Match", ""))
            edit = rid in self.once or rid in self.always
            data = self.once.pop(rid) if rid in self.once else self.always.get(rid)
            if edit:
                self.sb.dataset.bc.set_picture(self.sb.dataset.company_id, "customers", rid, data)
                rec = self.sb.dataset.bc.get_record(self.sb.dataset.company_id, "customers", rid)
                self.etag_after_edit[rid] = rec.picture_etag
        return await handler(request)


@pytest.fixture
async def sandbox_412() -> AsyncIterator[Callable[[int], Sandbox]]:
    made: list[Sandbox] = []

    def make(status: int) -> Sandbox:
        sb = Sandbox(seed=4, contacts=14, persons=0, stale_etag_status=status)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        await sb.stop()


def bc_bytes(sb: Sandbox, rid: str) -> bytes | None:
    rec = sb.dataset.bc.get_record(sb.dataset.company_id, "customers", rid)
    return rec.picture.data if rec.picture is not None else None


def patch_statuses(sb: Sandbox, rid: str) -> list[int]:
    return [e.status for e in sb.bc.log.entries if e.method == "PATCH" and target_of(e) == rid]


@pytest.mark.parametrize("stale_status", [409, 412])
async def test_overwrite_rereads_the_changed_picture_and_writes_with_the_fresh_etag(
    sandbox_412: Callable[[int], Sandbox], tmp_path: Path, stale_status: int
) -> None:
    sb = sandbox_412(stale_status)
    written = sb.dataset.expected["mappings"]["customers"]["written"]
    victims = [t for _, t in written[:2]]
    restless = written[2][1]  # changed again before every attempt: given up on, never overwritten blindly
    edit = EditInBC(
        sb,
        once={v: theirs((200, 0, 0)) for v in victims},
        always={restless: theirs((0, 0, 200))},
    )
    edit.install()
    await sb.start()
    listed = {
        v: sb.dataset.bc.get_record(sb.dataset.company_id, "customers", v).picture_etag for v in victims
    }
    cfg = write_config(sb, tmp_path, mappings=customers_only(sb, on_target_changed="overwrite"))

    result = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert result.code == 2, result.stderr  # the restless record fails; everything else is written
    counts = result.json()["mappings"][0]["counts"]
    assert counts["written"] == len(written) - 1

    rows = {
        r["target_id"]: r
        for r in ledger_rows(tmp_path / "ledger.sqlite", "SELECT * FROM items WHERE mapping = 'customers'")
    }
    for v in victims:
        assert patch_statuses(sb, v) == [stale_status, 204]
        # first with the etag we listed, then with the etag BC gave the picture edited by hand
        assert edit.if_match[v] == [listed[v], edit.etag_after_edit[v]]
        data = bc_bytes(sb, v)
        assert data is not None and data != theirs((200, 0, 0))
        assert hashlib.sha256(data).hexdigest() == rows[v]["output_hash"]
        assert rows[v]["status"] == "written"

    assert bc_bytes(sb, restless) == theirs((0, 0, 200))
    assert rows[restless]["status"] == "failed" and "keeps changing" in rows[restless]["error"]
    assert all("*" not in tag for tags in edit.if_match.values() for tag in tags)
    failures = result.json()["mappings"][0]["failures"]
    assert [f["target"] for f in failures] == [f"customers {rows[restless]['target_number']}"]


@pytest.mark.parametrize("stale_status", [409, 412])
async def test_keep_leaves_the_picture_edited_in_bc_and_stays_off_it(
    sandbox_412: Callable[[int], Sandbox], tmp_path: Path, stale_status: int
) -> None:
    sb = sandbox_412(stale_status)
    exp = sb.dataset.expected["mappings"]["customers"]
    # Records whose BC picture was empty when listed: without the edit, syncd would write them.
    empty = [t for _, t in exp["written"] if t not in exp["targets_with_picture"]]
    victims = empty[:2]
    edit = EditInBC(sb, once={v: theirs((0, 160, 0)) for v in victims})
    edit.install()
    await sb.start()
    cfg = write_config(sb, tmp_path, mappings=customers_only(sb, on_target_changed="keep"))

    result = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert result.code == 0, result.stderr
    counts = result.json()["mappings"][0]["counts"]
    assert counts["written"] == len(empty) - len(victims)
    assert counts["kept"] == len(exp["written"]) - len(empty) + len(victims)
    for v in victims:
        assert patch_statuses(sb, v) == [stale_status]  # one attempt with the listed etag, no retry
        assert bc_bytes(sb, v) == theirs((0, 160, 0))
    rows = {
        r["target_id"]: r
        for r in ledger_rows(tmp_path / "ledger.sqlite", "SELECT * FROM items WHERE mapping = 'customers'")
    }
    assert all(rows[v]["status"] == "kept" and rows[v]["wrote_picture"] == 0 for v in victims)

    again = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert again.code == 0, again.stderr
    assert again.json()["mappings"][0]["counts"]["patches"] == 0
    for v in victims:
        assert patch_statuses(sb, v) == [stale_status]
        assert bc_bytes(sb, v) == theirs((0, 160, 0))


def ours(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), colour).save(out, "JPEG")
    return out.getvalue()


async def test_a_clear_never_removes_a_picture_put_in_bc_after_the_listing(
    sandbox_412: Callable[[int], Sandbox], tmp_path: Path
) -> None:
    sb = sandbox_412(409)
    edit = EditInBC(sb, methods=("DELETE",))
    edit.install()
    await sb.start()
    exp = sb.dataset.expected["mappings"]["customers"]
    cfg = write_config(
        sb, tmp_path, mappings=customers_only(sb, on_source_blank="clear"), limits={"max_clears_percent": 50}
    )
    assert (await syncd("run", "--once", "-c", str(cfg))).code == 0
    (victim_source, victim), (other_source, other) = exp["written"][0], exp["written"][1]
    for source_id in (victim_source, other_source):
        sb.dataset.so.set_image("contact", source_id, None)  # removed in SuperOffice: clear in BC
    edit.once[victim] = theirs((90, 90, 0))  # … but someone puts a new picture on one of them in BC

    result = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert result.code == 0, result.stderr
    counts = result.json()["mappings"][0]["counts"]
    assert counts["cleared"] == 1 and counts["kept"] == 1
    assert bc_bytes(sb, victim) == theirs((90, 90, 0)) and bc_bytes(sb, other) is None
    deletes = [e.status for e in sb.bc.log.entries if e.method == "DELETE" and target_of(e) == victim]
    assert deletes == [409]

    again = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert again.code == 0 and bc_bytes(sb, victim) == theirs((90, 90, 0))
    assert [e.status for e in sb.bc.log.entries if e.method == "DELETE" and target_of(e) == victim] == [409]


async def test_keep_still_fills_a_picture_that_was_deleted_in_bc_meanwhile(
    sandbox_412: Callable[[int], Sandbox], tmp_path: Path
) -> None:
    sb = sandbox_412(412)
    edit = EditInBC(sb)
    edit.install()
    await sb.start()
    exp = sb.dataset.expected["mappings"]["customers"]
    cfg = write_config(sb, tmp_path, mappings=customers_only(sb, on_target_changed="keep"))
    assert (await syncd("run", "--once", "-c", str(cfg))).code == 0
    empty = [(s, t) for s, t in exp["written"] if t not in exp["targets_with_picture"]]
    source_id, victim = empty[0]  # a picture syncd wrote on the first run
    sb.dataset.so.set_image("contact", source_id, ours((0, 90, 200)))  # changed in SuperOffice …
    edit.once[victim] = None  # … and deleted in BC just before syncd writes the new one

    result = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert result.code == 0, result.stderr
    assert result.json()["mappings"][0]["counts"]["written"] == 1
    assert patch_statuses(sb, victim) == [204, 412, 204]  # first run; stale etag; the fresh etag
    data = bc_bytes(sb, victim)
    assert data is not None
    with Image.open(io.BytesIO(data)) as im:
        pixel = im.convert("RGB").getpixel((im.width // 2, im.height // 2))
    assert isinstance(pixel, tuple) and pixel[2] > 150  # the new blue picture: nothing to protect, filled
