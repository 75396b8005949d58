"""Business Central emulator: picture metadata, content, upload (PATCH + If-Match) and delete."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from tests.support.bc_fixtures import (
    COMPANY,
    CUST1,
    CUST2,
    EMP1,
    ITEM1,
    ITEM2,
    VEND1,
    RunningBC,
    decode_etag,
    gif,
    jpeg,
    png_alpha,
    running_bc,
)

BROKEN_HTML = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"


@pytest.fixture
async def bc() -> AsyncIterator[RunningBC]:
    async with running_bc() as running:
        yield running


def picture_url(bc: RunningBC, entity_set: str = "customers", rid: str = CUST1, version: str = "v2.0") -> str:
    return f"{bc.company(version)}/{entity_set}({rid})/picture"


async def get_picture(bc: RunningBC, entity_set: str = "customers", rid: str = CUST1) -> dict[str, Any]:
    resp, body = await bc.get(picture_url(bc, entity_set, rid))
    assert resp.status == 200, body
    assert isinstance(body, dict)
    return body


async def upload(
    bc: RunningBC, data: bytes, if_match: str | None, entity_set: str = "customers", rid: str = CUST1
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/octet-stream"}
    if if_match is not None:
        headers["If-Match"] = if_match
    resp = await bc.http.patch(
        f"{picture_url(bc, entity_set, rid)}/pictureContent", data=data, headers=headers
    )
    raw = await resp.read()
    return resp.status, (await resp.json()) if raw else raw


# -- GET -------------------------------------------------------------------------------------------------
async def test_picture_is_one_object_with_parent_id_and_media_links(bc: RunningBC) -> None:
    body = await get_picture(bc)
    assert body["@odata.context"] == (
        f"{bc.api()}/$metadata#companies({COMPANY})/customers({CUST1})/picture/$entity"
    )
    assert body["id"] == CUST1
    assert body["parentType"] == "Customer"
    assert (body["width"], body["height"], body["contentType"]) == (40, 30, "image/jpeg")
    link = f"{picture_url(bc)}/pictureContent"
    assert body["pictureContent@odata.mediaEditLink"] == link
    assert body["pictureContent@odata.mediaReadLink"] == link
    assert decode_etag(body["@odata.etag"]).startswith("'44;")


async def test_record_without_picture_answers_200_with_zeros(bc: RunningBC) -> None:
    body = await get_picture(bc, rid=CUST2)
    assert (body["width"], body["height"], body["contentType"]) == (0, 0, "")
    assert body["pictureContent@odata.mediaEditLink"].endswith(f"customers({CUST2})/picture/pictureContent")


@pytest.mark.parametrize(
    ("entity_set", "rid", "parent_type"),
    [("vendors", VEND1, "Vendor"), ("employees", EMP1, "Employee"), ("items", ITEM1, "Item")],
)
async def test_parent_type_per_entity_set(bc: RunningBC, entity_set: str, rid: str, parent_type: str) -> None:
    assert (await get_picture(bc, entity_set, rid))["parentType"] == parent_type


async def test_picture_with_key_form_is_the_same_object(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{picture_url(bc)}({CUST1})")
    assert resp.status == 200
    assert body["width"] == 40


async def test_picture_key_other_than_the_parent_id_is_404(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{picture_url(bc)}({CUST2})")
    assert resp.status == 404
    assert body["error"]["code"] == "BadRequest_NotFound"


async def test_v1_picture_is_a_collection_without_parent_type(bc: RunningBC) -> None:
    resp, body = await bc.get(picture_url(bc, version="v1.0"))
    assert resp.status == 200
    assert body["@odata.context"].endswith(f"/customers({CUST1})/picture")
    (picture,) = body["value"]
    assert "parentType" not in picture
    assert picture["content@odata.mediaEditLink"] == f"{picture_url(bc, version='v1.0')}({CUST1})/content"


@pytest.mark.parametrize("suffix", ["/pictureContent", f"({CUST1})/pictureContent", f"({CUST1})/content"])
async def test_content_returns_the_stored_bytes_and_type(bc: RunningBC, suffix: str) -> None:
    resp = await bc.http.get(picture_url(bc) + suffix)
    assert resp.status == 200
    assert resp.content_type == "image/jpeg"
    assert await resp.read() == bc.state.get_record(COMPANY, "customers", CUST1).picture.data  # type: ignore[union-attr]


async def test_content_of_an_empty_picture_is_204(bc: RunningBC) -> None:
    resp = await bc.http.get(f"{picture_url(bc, rid=CUST2)}/pictureContent")
    assert resp.status == 204
    assert await resp.read() == b""


async def test_v1_stream_is_content_not_picture_content(bc: RunningBC) -> None:
    ok = await bc.http.get(f"{picture_url(bc, 'items', ITEM1, 'v1.0')}({ITEM1})/content")
    assert ok.status == 200 and ok.content_type == "image/gif"
    wrong = await bc.http.get(f"{picture_url(bc, 'items', ITEM1, 'v1.0')}({ITEM1})/pictureContent")
    assert wrong.status == 404


# -- PATCH ------------------------------------------------------------------------------------------------
async def test_upload_without_if_match_is_400_invalid_token(bc: RunningBC) -> None:
    status, body = await upload(bc, jpeg((64, 48)), None)
    assert status == 400
    assert body["error"]["code"] == "BadRequest_InvalidToken"
    assert body["error"]["message"].startswith(
        "Could not validate the client concurrency token required by the service. Please provide a valid "
        "token in the client request.  CorrelationId:  "
    )
    assert (await get_picture(bc))["width"] == 40  # unchanged


async def test_upload_with_star_is_204_and_replaces_the_picture(bc: RunningBC) -> None:
    data = jpeg((64, 48))
    status, body = await upload(bc, data, "*")
    assert (status, body) == (204, b"")
    after = await get_picture(bc)
    assert (after["width"], after["height"]) == (64, 48)
    content = await bc.http.get(f"{picture_url(bc)}/pictureContent")
    assert await content.read() == data  # stored as given, not re-encoded


async def test_upload_with_the_current_etag_succeeds_and_changes_it(bc: RunningBC) -> None:
    before = await get_picture(bc)
    status, _ = await upload(bc, jpeg((10, 10)), before["@odata.etag"])
    assert status == 204
    after = await get_picture(bc)
    assert after["@odata.etag"] != before["@odata.etag"]


async def test_upload_with_a_stale_etag_is_409_entity_changed(bc: RunningBC) -> None:
    stale = (await get_picture(bc))["@odata.etag"]
    assert (await upload(bc, jpeg((10, 10)), stale))[0] == 204
    status, body = await upload(bc, jpeg((12, 12)), stale)
    assert status == 409
    assert body["error"]["code"] == "Request_EntityChanged"
    assert body["error"]["message"].startswith("Another user has already changed the record.")
    assert (await get_picture(bc))["width"] == 10


async def test_stale_etag_status_knob_gives_412() -> None:
    async with running_bc(stale_etag_status=412) as bc:
        stale = (await get_picture(bc))["@odata.etag"]
        await upload(bc, jpeg((10, 10)), "*")
        status, body = await upload(bc, jpeg((12, 12)), stale)
        assert status == 412
        assert body["error"]["code"] == "Request_EntityChanged"


async def test_the_parent_etag_is_not_the_picture_etag(bc: RunningBC) -> None:
    _, record = await bc.get(f"{bc.company()}/customers({CUST1})")
    status, _ = await upload(bc, jpeg((10, 10)), record["@odata.etag"])
    assert status == 409


async def test_json_escaped_etag_is_not_accepted(bc: RunningBC) -> None:
    etag = (await get_picture(bc))["@odata.etag"]
    escaped = etag.replace('"', '\\"')
    status, body = await upload(bc, jpeg((10, 10)), escaped)
    assert status == 400
    assert body["error"]["code"] == "BadRequest_InvalidToken"


@pytest.mark.parametrize(
    ("data", "size", "content_type"),
    [
        (png_alpha((33, 17)), (33, 17), "image/png"),
        (gif((7, 9)), (7, 9), "image/gif"),
        (jpeg((120, 80)), (120, 80), "image/jpeg"),
    ],
)
async def test_width_height_and_type_are_read_from_the_bytes(
    bc: RunningBC, data: bytes, size: tuple[int, int], content_type: str
) -> None:
    assert (await upload(bc, data, "*"))[0] == 204
    body = await get_picture(bc)
    assert (body["width"], body["height"]) == size
    assert body["contentType"] == content_type
    content = await bc.http.get(f"{picture_url(bc)}/pictureContent")
    assert content.content_type == content_type


async def test_webp_upload_is_reported_as_webp(bc: RunningBC) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (21, 13), (1, 2, 3)).save(buf, format="WEBP")
    assert (await upload(bc, buf.getvalue(), "*"))[0] == 204
    body = await get_picture(bc)
    assert (body["width"], body["height"], body["contentType"]) == (21, 13, "image/webp")


async def test_bytes_that_are_not_an_image_are_stored_with_zero_size(bc: RunningBC) -> None:
    assert (await upload(bc, BROKEN_HTML, "*"))[0] == 204
    body = await get_picture(bc)
    assert (body["width"], body["height"], body["contentType"]) == (0, 0, "application/octet-stream")
    content = await bc.http.get(f"{picture_url(bc)}/pictureContent")
    assert await content.read() == BROKEN_HTML


async def test_upload_changes_the_parent_etag_and_last_modified(bc: RunningBC) -> None:
    _, before = await bc.get(f"{bc.company()}/customers({CUST2})")
    assert (await upload(bc, jpeg(), "*", rid=CUST2))[0] == 204
    _, after = await bc.get(f"{bc.company()}/customers({CUST2})")
    assert after["@odata.etag"] != before["@odata.etag"]
    assert after["lastModifiedDateTime"] > before["lastModifiedDateTime"]
    # so an incremental poll sees it
    _, changed = await bc.get(
        f"{bc.company()}/customers",
        params={"$filter": f"lastModifiedDateTime gt {before['lastModifiedDateTime']}"},
    )
    assert CUST2 in [r["id"] for r in changed["value"]]


async def test_empty_body_is_400(bc: RunningBC) -> None:
    status, body = await upload(bc, b"", "*")
    assert status == 400
    assert "empty" in body["error"]["message"]


async def test_post_to_picture_or_content_is_405_method_not_allowed(bc: RunningBC) -> None:
    for url in (f"{picture_url(bc)}/pictureContent", picture_url(bc)):
        resp = await bc.http.post(url, data=jpeg(), headers={"If-Match": "*"})
        body = await resp.json()
        assert resp.status == 405, url
        assert body["error"]["code"] == "BadRequest_MethodNotAllowed"
        assert "'POST' requests for" in body["error"]["message"]


async def test_put_on_the_stream_is_not_the_documented_upload_verb(bc: RunningBC) -> None:
    resp = await bc.http.put(f"{picture_url(bc)}/pictureContent", data=jpeg(), headers={"If-Match": "*"})
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "BadRequest_MethodNotAllowed"
    assert (await get_picture(bc))["width"] == 40


async def test_v1_upload_goes_to_picture_id_content(bc: RunningBC) -> None:
    url = f"{picture_url(bc, 'items', ITEM2, 'v1.0')}({ITEM2})/content"
    resp = await bc.http.patch(url, data=jpeg((50, 40)), headers={"If-Match": "*"})
    assert resp.status == 204
    body = await get_picture(bc, "items", ITEM2)
    assert (body["width"], body["height"]) == (50, 40)


async def test_v1_upload_needs_if_match_too(bc: RunningBC) -> None:
    url = f"{picture_url(bc, 'items', ITEM2, 'beta')}({ITEM2})/content"
    resp = await bc.http.patch(url, data=jpeg((50, 40)))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "BadRequest_InvalidToken"


async def test_item_upload_replaces_the_item_picture(bc: RunningBC) -> None:
    assert (await upload(bc, png_alpha((30, 30)), "*", "items", ITEM1))[0] == 204
    body = await get_picture(bc, "items", ITEM1)
    assert (body["contentType"], body["width"]) == ("image/png", 30)
    record = bc.state.get_record(COMPANY, "items", ITEM1)
    assert record.picture is not None and record.picture.content_type == "image/png"


async def test_concurrent_conditional_uploads_let_exactly_one_win(bc: RunningBC) -> None:
    etag = (await get_picture(bc))["@odata.etag"]
    results = await asyncio.gather(*(upload(bc, jpeg((20 + i, 20)), etag) for i in range(4)))
    assert sorted(status for status, _ in results) == [204, 409, 409, 409]


async def test_upload_to_unknown_record_is_404(bc: RunningBC) -> None:
    status, body = await upload(bc, jpeg(), "*", rid="00000000-1111-2222-3333-444444444444")
    assert status == 404
    assert body["error"]["code"] == "BadRequest_NotFound"


# -- DELETE -----------------------------------------------------------------------------------------------
async def test_delete_clears_the_picture_and_later_get_shows_zeros(bc: RunningBC) -> None:
    _, parent_before = await bc.get(f"{bc.company()}/customers({CUST1})")
    resp = await bc.http.delete(picture_url(bc))
    assert resp.status == 204
    body = await get_picture(bc)
    assert (body["width"], body["height"], body["contentType"]) == (0, 0, "")
    _, parent_after = await bc.get(f"{bc.company()}/customers({CUST1})")
    assert parent_after["@odata.etag"] != parent_before["@odata.etag"]
    assert (await bc.http.get(f"{picture_url(bc)}/pictureContent")).status == 204


async def test_delete_with_key_form_and_current_etag(bc: RunningBC) -> None:
    etag = (await get_picture(bc, "employees", EMP1))["@odata.etag"]
    resp = await bc.http.delete(f"{picture_url(bc, 'employees', EMP1)}({EMP1})", headers={"If-Match": etag})
    assert resp.status == 204
    assert (await get_picture(bc, "employees", EMP1))["width"] == 0


async def test_delete_with_a_stale_etag_is_409(bc: RunningBC) -> None:
    stale = (await get_picture(bc))["@odata.etag"]
    await upload(bc, jpeg((5, 5)), "*")
    resp = await bc.http.delete(picture_url(bc), headers={"If-Match": stale})
    assert resp.status == 409
    assert (await get_picture(bc))["width"] == 5


async def test_delete_of_an_empty_picture_changes_nothing(bc: RunningBC) -> None:
    _, before = await bc.get(f"{bc.company()}/customers({CUST2})")
    assert (await bc.http.delete(picture_url(bc, rid=CUST2))).status == 204
    _, after = await bc.get(f"{bc.company()}/customers({CUST2})")
    assert after["@odata.etag"] == before["@odata.etag"]


# -- admin: edits by hand in BC ---------------------------------------------------------------------------
async def test_admin_set_picture_acts_like_an_edit_in_bc(bc: RunningBC) -> None:
    before = await get_picture(bc, rid=CUST2)
    data = gif((8, 8))
    resp, info = await bc.admin("PUT", f"bc/companies/{COMPANY}/customers/{CUST2}/picture", data=data)
    assert resp.status == 200
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    after = await get_picture(bc, rid=CUST2)
    assert after["@odata.etag"] != before["@odata.etag"]
    assert (after["width"], after["contentType"]) == (8, "image/gif")
    resp, _ = await bc.admin("DELETE", f"bc/companies/{COMPANY}/customers/{CUST2}/picture")
    assert resp.status == 200
    assert (await get_picture(bc, rid=CUST2))["width"] == 0


async def test_admin_snapshot_lists_records_with_picture_hashes(bc: RunningBC) -> None:
    data = jpeg((9, 9))
    await upload(bc, data, "*", rid=CUST2)
    resp, snap = await bc.admin("GET", "bc/snapshot")
    assert resp.status == 200
    cronus = next(c for c in snap["companies"] if c["id"] == COMPANY)
    rows = {r["id"]: r for r in cronus["entities"]["customers"]}
    assert rows[CUST2]["picture"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert rows[CUST2]["pictureEtag"] == (await get_picture(bc, rid=CUST2))["@odata.etag"]
    assert rows["93049aad-bde4-ea11-bbf2-00155df3a615"]["picture"] is None


async def test_admin_reset_restores_the_seeded_pictures(bc: RunningBC) -> None:
    await upload(bc, jpeg((9, 9)), "*")
    resp, _ = await bc.admin("POST", "reset?data=true")
    assert resp.status == 200
    assert (await get_picture(bc))["width"] == 40
