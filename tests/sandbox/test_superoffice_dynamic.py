"""The Dynamic archive provider (``archive/dynamic``) over BinaryObject/BinaryObjectLink, the picture
tables that PUT/POST/DELETE …/Image keep, its fault knobs, and the SuperOffice request limit."""

from __future__ import annotations

from typing import Any

from syncd.sandbox.server import _options, _parser
from tests.support.so_fixtures import RunningSO, SOFactory, gif_bytes, jpeg_bytes

PICTURES = (
    "BinaryObjectLink.BinaryObjectLink_id,BinaryObjectLink.ownerRecord,BinaryObjectLink.rank,"
    "BinaryObjectLink.binaryObjectId,BinaryObjectLink.updated,BinaryObjectLink:binaryObjectId.registered,"
    "BinaryObjectLink:binaryObjectId.updated,BinaryObjectLink:binaryObjectId.updatedCount,"
    "BinaryObjectLink:binaryObjectId.originalSize,BinaryObjectLink:binaryObjectId.mimeType"
)
CONTACTS = "BinaryObjectLink.ownerTable eq 5 and BinaryObjectLink.linkType eq 17"
PERSONS = "BinaryObjectLink.ownerTable eq 6 and BinaryObjectLink.linkType eq 1"


async def dynamic(so: RunningSO, **params: str) -> tuple[int, Any]:
    query = {f"${k}": v for k, v in params.items()}
    async with so.http.get(f"{so.api}/archive/dynamic", params=query) as r:
        return r.status, await r.json()


async def pictures(so: RunningSO, flt: str = CONTACTS) -> dict[int, dict[str, Any]]:
    status, body = await dynamic(so, select=PICTURES, filter=flt)
    assert status == 200, body
    return {row["BinaryObjectLink.ownerRecord"]: row for row in body["value"]}


async def test_rows_carry_the_select_strings_verbatim_and_the_primary_key_as_a_string(so: RunningSO) -> None:
    status, body = await dynamic(
        so, select=PICTURES, filter=CONTACTS, orderBy="BinaryObjectLink.BinaryObjectLink_id"
    )
    assert status == 200 and body["odata.nextLink"] is None
    rows = body["value"]
    assert [r["BinaryObjectLink.ownerRecord"] for r in rows] == [1, 3, 4]  # contacts with a picture
    first = rows[0]
    assert set(first) == {"PrimaryKey", "EntityName", *PICTURES.split(",")}
    assert first["PrimaryKey"] == str(first["BinaryObjectLink.BinaryObjectLink_id"])
    assert first["EntityName"] == "BinaryObjectLink"
    assert first["BinaryObjectLink:binaryObjectId.originalSize"] == len(jpeg_bytes())
    assert first["BinaryObjectLink:binaryObjectId.mimeType"] == "image/jpeg"
    assert first["BinaryObjectLink:binaryObjectId.registered"] == "2024-02-01T10:00:00"
    assert first["BinaryObjectLink:binaryObjectId.updatedCount"] == 0


async def test_person_links_are_told_apart_by_owner_table_and_link_type(so: RunningSO) -> None:
    assert set(await pictures(so, PERSONS)) == {1}


async def test_keyset_paging_with_gt_orderby_and_top(so: RunningSO) -> None:
    seen: list[int] = []
    last = 0
    for _ in range(10):
        status, body = await dynamic(
            so,
            select="BinaryObjectLink.BinaryObjectLink_id",
            filter=f"BinaryObjectLink.BinaryObjectLink_id gt {last}",
            orderBy="BinaryObjectLink.BinaryObjectLink_id",
            top="1",
        )
        assert status == 200
        if not body["value"]:
            break
        last = body["value"][0]["BinaryObjectLink.BinaryObjectLink_id"]
        seen.append(last)
    assert seen == [1, 2, 3, 4]


async def test_filter_operators_in_and_skip_and_descending_order(so: RunningSO) -> None:
    sel = "BinaryObjectLink.ownerRecord"
    status, body = await dynamic(
        so, select=sel, filter="BinaryObjectLink.ownerTable in (5,6) and BinaryObjectLink.ownerRecord ne 3"
    )
    assert status == 200 and sorted(r[sel] for r in body["value"]) == [1, 1, 4]
    status, body = await dynamic(
        so, select=sel, filter="BinaryObjectLink.ownerTable eq 5", orderBy=f"{sel} desc", skip="1", top="1"
    )
    assert [r[sel] for r in body["value"]] == [3]
    for op, expected in (("lt", [1]), ("le", [1, 3]), ("ge", [3, 4]), ("gt", [4])):
        status, body = await dynamic(so, select=sel, filter=f"{CONTACTS} and {sel} {op} 3")
        assert sorted(r[sel] for r in body["value"]) == expected, op


async def test_unknown_tables_and_fields_are_400_with_the_superoffice_error_body(so: RunningSO) -> None:
    for select in (
        "Nope.field",
        "BinaryObjectLink.nope",
        "BinaryObjectLink:ownerRecord.x",
        "BinaryObjectLink",
    ):
        status, body = await dynamic(so, select=select)
        assert status == 400, select
        assert body["Error"] is True and body["ErrorType"] and body["ErrorMessage"]
    status, body = await dynamic(so, select="BinaryObjectLink.rank", filter="BinaryObjectLink.nope eq 1")
    assert status == 400


async def test_inner_join_drops_a_link_to_a_missing_blob_left_join_keeps_it(so: RunningSO) -> None:
    link = next(lk for lk in so.state.links.values() if lk.owner_record == 3 and lk.owner_table == 5)
    del so.state.blobs[link.blob_id]  # a dangling link, as a damaged database might hold
    inner = "BinaryObjectLink.ownerRecord,BinaryObjectLink:binaryObjectId.mimeType"
    left = "BinaryObjectLink.ownerRecord,BinaryObjectLink.binaryObjectId.mimeType"
    _, body = await dynamic(so, select=inner, filter=CONTACTS)
    assert [r["BinaryObjectLink.ownerRecord"] for r in body["value"]] == [1, 4]
    _, body = await dynamic(so, select=left, filter=CONTACTS)
    rows = {r["BinaryObjectLink.ownerRecord"]: r for r in body["value"]}
    assert set(rows) == {1, 3, 4} and rows[3]["BinaryObjectLink.binaryObjectId.mimeType"] is None


async def test_a_replaced_picture_gets_a_new_blob_row_and_the_link_moves_to_it(so: RunningSO) -> None:
    before = (await pictures(so))[1]
    async with so.http.put(
        f"{so.api}/Contact/1/Image", data=gif_bytes(), headers={"Content-Type": "image/gif"}
    ) as r:
        blob_id = await r.json()
    after = (await pictures(so))[1]
    assert after["BinaryObjectLink.BinaryObjectLink_id"] == before["BinaryObjectLink.BinaryObjectLink_id"]
    assert after["BinaryObjectLink.binaryObjectId"] == blob_id != before["BinaryObjectLink.binaryObjectId"]
    assert after["BinaryObjectLink.updated"] == "2024-05-01T00:00:00"
    assert after["BinaryObjectLink:binaryObjectId.mimeType"] == "image/gif"
    async with so.http.get(f"{so.api}/Contact/1/ImageInfo") as r:
        assert (await r.json())["BlobId"] == blob_id
    assert before["BinaryObjectLink.binaryObjectId"] not in so.state.blobs  # the old row is gone


async def test_with_the_knob_a_replaced_picture_updates_its_blob_row_in_place(so: RunningSO) -> None:
    r = await so.admin("PUT", "so/options", json={"image_replace_in_place": True})
    assert r.status == 200
    before = (await pictures(so))[1]
    async with so.http.put(
        f"{so.api}/Contact/1/Image", data=gif_bytes(), headers={"Content-Type": "image/gif"}
    ) as r:
        blob_id = await r.json()
    after = (await pictures(so))[1]
    assert blob_id == after["BinaryObjectLink.binaryObjectId"] == before["BinaryObjectLink.binaryObjectId"]
    assert after["BinaryObjectLink:binaryObjectId.updatedCount"] == 1
    assert after["BinaryObjectLink:binaryObjectId.updated"] == "2024-05-01T00:00:00"
    assert after["BinaryObjectLink:binaryObjectId.originalSize"] == len(gif_bytes())


async def test_deleting_a_picture_removes_its_link_row(so: RunningSO) -> None:
    async with so.http.delete(f"{so.api}/Contact/3/Image") as r:
        assert r.status == 204
    assert set(await pictures(so)) == {1, 4}
    async with so.http.post(
        f"{so.api}/Contact/2/Image", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}
    ) as r:
        assert r.status == 200
    assert set(await pictures(so)) == {1, 2, 4}


async def test_the_lowest_ranked_link_is_what_image_and_image_info_show(so: RunningSO) -> None:
    other = so.state.set_image("contact", 2, gif_bytes())  # a second blob, then link it to contact 1 too
    assert other is not None
    so.state.add_link("contact", 1, other, rank=0)
    async with so.http.get(f"{so.api}/Contact/1/ImageInfo") as r:
        assert (await r.json())["BlobId"] == other
    _, body = await dynamic(
        so,
        select="BinaryObjectLink.rank,BinaryObjectLink.binaryObjectId",
        filter=f"{CONTACTS} and BinaryObjectLink.ownerRecord eq 1",
    )
    assert sorted((r["BinaryObjectLink.rank"], r["BinaryObjectLink.binaryObjectId"]) for r in body["value"])[
        0
    ] == (0, other)


async def test_provider_fault_knob_answers_403_and_fail_after_interrupts_a_pass(so: RunningSO) -> None:
    await so.admin("PUT", "so/options", json={"dynamic_provider_status": 403})
    status, body = await dynamic(so, select=PICTURES, filter=CONTACTS)
    assert status == 403 and body["Error"] is True
    await so.admin("PUT", "so/options", json={"dynamic_provider_status": 0, "dynamic_fail_after": 1})
    assert (await dynamic(so, select=PICTURES, filter=CONTACTS))[0] == 200
    assert (await dynamic(so, select=PICTURES, filter=CONTACTS))[0] == 500
    assert (await dynamic(so, select=PICTURES, filter=PERSONS))[0] == 500
    r = await so.admin("PUT", "so/options", json={"dynamic_provider_status": 200})
    assert r.status == 400  # only error statuses (or 0) make sense there


async def test_numeric_primary_key_knob(so: RunningSO) -> None:
    await so.admin("PUT", "so/options", json={"dynamic_numeric_primary_key": True})
    _, body = await dynamic(so, select="BinaryObjectLink.rank", filter=CONTACTS)
    assert all(isinstance(r["PrimaryKey"], int) for r in body["value"])


async def test_request_limit_answers_429_with_retry_after(make_so: SOFactory) -> None:
    so = await make_so(request_limit=(3, 1.0))
    statuses = []
    for _ in range(4):
        async with so.http.get(f"{so.api}/Contact/1/ImageInfo") as r:
            statuses.append(r.status)
            retry_after = r.headers.get("Retry-After")
            body = await r.json()
    assert statuses == [200, 200, 200, 429]
    assert retry_after == "1" and body["Error"] is True
    so.emulator.clock = lambda: 10**10  # the window has passed
    async with so.http.get(f"{so.api}/Contact/1/ImageInfo") as r:
        assert r.status == 200


def test_sandbox_command_line_takes_so_rate_limit() -> None:
    options = _options(_parser().parse_args(["--so-rate-limit", "10/1", "--bc-rate-limit", "20/1"]))
    assert options["request_limit"] == (10, 1.0) and options["rate_limit"] == (20, 1.0)
    for bad in ("10", "0/1", "x/1"):
        try:
            _options(_parser().parse_args(["--so-rate-limit", bad]))
        except ValueError as exc:
            assert "--so-rate-limit" in str(exc)
        else:
            raise AssertionError(bad)
