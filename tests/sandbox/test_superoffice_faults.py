"""Fault injection in SuperOffice's shapes, the request log and counters, and the SO admin routes."""

from __future__ import annotations

import email.utils
from typing import Any

import aiohttp
import pytest

from tests.support.so_fixtures import RunningSO, gif_bytes, jpeg_bytes

NOW = 1_714_521_600.0  # the fixture clock: 2024-05-01T00:00:00Z


async def set_faults(so: RunningSO, **knobs: Any) -> None:
    r = await so.admin("PUT", "faults", json=knobs)
    assert r.status == 200


async def requests_log(so: RunningSO) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await (await so.anon.get(f"{so.origin}/_sandbox/requests")).json()
    return entries


async def test_429_carries_retry_after_in_seconds(so: RunningSO) -> None:
    await set_faults(so, rate_429=1.0, retry_after="seconds", retry_after_seconds=7)
    async with so.http.get(f"{so.api}/Contact") as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "7"
        body = await r.json()
    assert body["Error"] is True and body["ErrorSource"] == "SuperOffice.Services.Implementation"
    last = (await requests_log(so))[-1]
    assert (last["status"], last["fault"], last["retry_after_until"]) == (429, "429", NOW + 7)


async def test_429_carries_retry_after_as_http_date(so: RunningSO) -> None:
    await set_faults(so, rate_429=1.0, retry_after="http-date", retry_after_seconds=30)
    async with so.http.get(f"{so.api}/Contact/1/ImageInfo") as r:
        assert r.status == 429
        when = email.utils.parsedate_to_datetime(r.headers["Retry-After"]).timestamp()
    assert NOW + 30 <= when <= NOW + 31


async def test_429_without_retry_after_when_asked(so: RunningSO) -> None:
    await set_faults(so, rate_429=1.0, retry_after="none")
    async with so.http.get(f"{so.api}/Contact") as r:
        assert r.status == 429
        assert "Retry-After" not in r.headers


async def test_5xx_faults_come_in_superoffice_shapes(so: RunningSO) -> None:
    await set_faults(so, seed=3, rate_5xx=1.0, retry_after_seconds=2)
    seen: set[tuple[int, str, bool]] = set()
    for _ in range(30):
        async with so.http.get(f"{so.api}/Contact") as r:
            seen.add((r.status, r.content_type, "Retry-After" in r.headers))
            if r.content_type == "application/json":
                assert (await r.json())["Error"] is True
            else:
                assert "maintenance" in (await r.text()).lower()
    assert seen == {
        (503, "application/json", True),
        (500, "application/json", False),
        (503, "text/html", False),
    }


async def test_faults_can_be_limited_to_routes_and_never_hit_admin(so: RunningSO) -> None:
    await set_faults(so, rate_5xx=1.0, only_routes=["/Image"])
    async with so.http.get(f"{so.api}/Contact") as r:
        assert r.status == 200
    async with so.http.get(f"{so.api}/Contact/1/Image") as r:
        assert r.status >= 500
    assert (await so.admin("GET", "so/snapshot")).status == 200


async def test_injected_reset_drops_the_connection_and_is_logged_with_status_0(so: RunningSO) -> None:
    await set_faults(so, rate_reset=1.0)
    with pytest.raises(aiohttp.ClientError):
        async with so.http.get(f"{so.api}/Contact") as r:
            await r.read()
    last = (await requests_log(so))[-1]
    assert (last["status"], last["fault"]) == (0, "reset")


async def test_truncated_body_fault_cuts_an_image_short(so: RunningSO) -> None:
    await set_faults(so, rate_truncate=1.0)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with so.http.get(f"{so.api}/Contact/1/Image") as r:
            await r.read()


async def test_request_log_and_counters_record_each_api_call(so: RunningSO) -> None:
    await so.http.get(f"{so.api}/Contact/1/Image")
    await so.http.get(f"{so.api}/Contact/2/Image")
    await so.anon.get(f"{so.api}/Contact")
    entries = await requests_log(so)
    assert [(e["method"], e["route"], e["status"]) for e in entries] == [
        ("GET", "/{cust}/api/v1/Contact/{id}/Image", 200),
        ("GET", "/{cust}/api/v1/Contact/{id}/Image", 404),
        ("GET", "/{cust}/api/v1/Contact", 401),
    ]
    assert entries[0]["path"] == "/Cust00001/api/v1/Contact/1/Image"
    assert entries[0]["principal"] == "syncd" and entries[2]["principal"] is None
    assert entries[0]["response_bytes"] == len(jpeg_bytes())
    since = await (
        await so.anon.get(f"{so.origin}/_sandbox/requests", params={"since": entries[1]["seq"]})
    ).json()
    assert [e["seq"] for e in since] == [entries[2]["seq"]]
    stats = await (await so.anon.get(f"{so.origin}/_sandbox/stats")).json()
    assert stats["total"] == 3
    assert stats["by_route"]["GET /{cust}/api/v1/Contact/{id}/Image 404"] == 1
    assert so.emulator.log.count(method="GET", route_contains="/Image") == 2


async def test_reset_clears_log_and_faults_and_optionally_data(so: RunningSO) -> None:
    await set_faults(so, rate_429=0.5)
    await so.http.put(f"{so.api}/Contact/2/Image", data=gif_bytes(), headers={"Content-Type": "image/gif"})
    await so.admin("PATCH", "so/contact/1", json={"name": "Renamed"})
    assert (await so.admin("POST", "reset")).status == 200
    assert await requests_log(so) == []
    assert (await (await so.anon.get(f"{so.origin}/_sandbox/faults")).json())["rate_429"] == 0.0
    snap = await (await so.anon.get(f"{so.origin}/_sandbox/so/snapshot")).json()
    assert snap["contacts"][0]["name"] == "Renamed"  # data kept without ?data=true
    await so.admin("POST", "reset?data=true")
    snap = await (await so.anon.get(f"{so.origin}/_sandbox/so/snapshot")).json()
    assert snap["contacts"][0]["name"] == "Acme AS"
    assert snap["contacts"][1]["image"] is None


async def test_snapshot_lists_everything_and_reads_do_not_change_it(so: RunningSO) -> None:
    first = await (await so.anon.get(f"{so.origin}/_sandbox/so/snapshot")).json()
    assert [c["contactId"] for c in first["contacts"]] == ["1", "2", "3", "4", "5"]
    assert [p["personId"] for p in first["persons"]] == ["1", "2", "3", "4"]
    image = first["contacts"][0]["image"]
    assert image["mimeType"] == "image/jpeg" and image["content"].startswith("sha256:")
    assert first["persons"][0]["image"]["content"] == "lazy:person1"
    for path in ("Contact", "Contact/1/Image", "Person/1/Image", "Contact/1/ImageInfo", "Person/1"):
        await (await so.http.get(f"{so.api}/{path}")).read()
    again = await (await so.anon.get(f"{so.origin}/_sandbox/so/snapshot")).json()
    assert again == first


async def test_admin_can_set_and_clear_pictures_like_an_edit_by_hand(so: RunningSO) -> None:
    r = await so.admin("PUT", "so/person/2/image", data=gif_bytes())
    assert r.status == 200
    async with so.http.get(f"{so.api}/Person/2/Image") as resp:
        assert resp.headers["Content-Type"] == "image/gif"
        assert await resp.read() == gif_bytes()
    r = await so.admin("DELETE", "so/person/2/image")
    assert r.status == 204
    async with so.http.get(f"{so.api}/Person/2/Image") as resp:
        assert resp.status == 404
    assert (await so.admin("PUT", "so/person/999/image", data=gif_bytes())).status == 404
    assert (await so.admin("PUT", "so/person/2/image", data=b"")).status == 400
    assert (await so.admin("PUT", "so/robot/2/image", data=gif_bytes())).status == 404


async def test_admin_edits_columns_and_creates_records(so: RunningSO) -> None:
    r = await so.anon.patch(f"{so.origin}/_sandbox/so/person/4", json={"personNumber": "P0004"})
    row = await r.json()
    assert (row["personNumber"], row["personUpdatedDate"]) == ("P0004", "2024-05-01T00:00:00")
    r = await so.anon.patch(f"{so.origin}/_sandbox/so/contact/2?touch=false", json={"code": "C00099"})
    assert (await r.json())["updatedDate"] == "2024-03-05T09:30:00"
    r = await so.anon.patch(f"{so.origin}/_sandbox/so/contact/2", json={"nosuch": "x"})
    assert r.status == 400
    r = await so.anon.patch(f"{so.origin}/_sandbox/so/contact/2", json={"contactUdef/SuperOffice:1": "gold"})
    assert r.status == 200
    rows = (
        await (
            await so.http.get(
                f"{so.api}/Contact",
                params={"$select": "contactUdef/SuperOffice:1", "$filter": "contactId eq 2"},
            )
        ).json()
    )["value"]
    assert rows[0]["contactUdef/SuperOffice:1"] == "gold"
    r = await so.anon.post(f"{so.origin}/_sandbox/so/contact", json={"name": "Zeta", "code": "C00006"})
    assert r.status == 201
    created = await r.json()
    assert created["contactId"] == "6" and created["registeredDate"] == "2024-05-01T00:00:00"
    r = await so.anon.post(
        f"{so.origin}/_sandbox/so/person",
        json={"contactId": 6, "firstName": "Zed", "lastName": "Z", "personNumber": "P0009"},
    )
    assert (await r.json())["fullName"] == "Zed Z"
    r = await so.anon.post(f"{so.origin}/_sandbox/so/person", json={"contactId": 77, "firstName": "No"})
    assert r.status == 400


async def test_options_can_be_switched_at_run_time(so: RunningSO) -> None:
    r = await so.anon.put(f"{so.origin}/_sandbox/so/options", json={"image_updates_touch_updated_date": True})
    assert (await r.json())["image_updates_touch_updated_date"] is True
    await so.http.delete(f"{so.api}/Contact/1/Image")
    assert (await (await so.http.get(f"{so.api}/Contact/1")).json())["UpdatedDate"] == "2024-05-01T00:00:00"
    r = await so.anon.put(f"{so.origin}/_sandbox/so/options", json={"bogus": 1})
    assert r.status == 400


async def test_admin_routes_refuse_bodies_that_are_not_json_objects(so: RunningSO) -> None:
    for method, path in (
        ("PATCH", "so/contact/1"),
        ("POST", "so/contact"),
        ("PUT", "so/options"),
        ("PUT", "so/tenant"),
    ):
        for data in (b"{nope", b"[1, 2]"):
            r = await so.admin(method, path, data=data, headers={"Content-Type": "application/json"})
            assert r.status == 400, (method, path, data)
    r = await so.admin("PUT", "so/options", json={"ticket_lifetime": 2})
    assert r.status == 200 and so.emulator.ticket_lifetime == 2.0
