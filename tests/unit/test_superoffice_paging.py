"""The SuperOffice client's paging and picture pass against a hand-written server: keyset paging (never
``$skip``), ``odata.nextLink`` followed only on the configured origin, bounded loops, ids strictly
increasing, PrimaryKey as string or number, provider dates parsed leniently; and the run store keeping
the lowest-ranked link of an owner."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from syncd import superoffice
from syncd.config import ApiLimits
from syncd.errors import ApiError, ForeignOriginError
from syncd.http import ApiClient, new_session
from syncd.matcher import MatchRule
from syncd.staging import RunStore
from syncd.superoffice import IncompletePass, SuperOfficeClient, normalize_date

Page = Callable[[web.Request], dict[str, Any]]


class Auth:
    seen_hosts: list[str]

    def __init__(self) -> None:
        self.seen_hosts = []

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {"Authorization": "Basic c2VjcmV0OnNlY3JldA=="}

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False

    def describe(self) -> str:
        return "test"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Page], Any]]:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(page: Page) -> tuple[SuperOfficeClient, list[web.Request], str]:
        seen: list[web.Request] = []

        async def handler(request: web.Request) -> web.Response:
            seen.append(request)
            return web.json_response(page(request))

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
        session = new_session()
        sessions.append(session)
        api = ApiClient(
            api="superoffice",
            session=session,
            auth=Auth(),
            limits=ApiLimits(requests_per_second=1000, concurrency=4, max_retries=0),
            base_url=f"{origin}/Cust1/api/v1",
        )
        client = SuperOfficeClient(api, f"{origin}/Cust1/api/v1", page_size=3, max_image_bytes=10**6)
        return client, seen, origin

    yield start
    for s in sessions:
        await s.close()
    for r in runners:
        await r.cleanup()


def contacts_after(request: web.Request, total: int = 7, top: int = 3) -> list[dict[str, Any]]:
    flt = request.query.get("$filter", "contactId gt 0")
    last = int(flt.rsplit(" ", 1)[1])
    return [{"PrimaryKey": str(i), "contactId": str(i), "code": f"C{i}"} for i in range(last + 1, total + 1)][
        :top
    ]


async def test_listing_is_keyset_paged_on_the_id_never_with_skip(serve: Any) -> None:
    client, seen, _ = await serve(lambda r: {"odata.nextLink": None, "value": contacts_after(r)})
    ids = [row.id async for row in client.list("contact", ["code"])]
    assert ids == [1, 2, 3, 4, 5, 6, 7]
    assert [r.query["$filter"] for r in seen] == ["contactId gt 0", "contactId gt 3", "contactId gt 6"]
    assert all("$skip" not in r.query and r.query["$orderBy"] == "contactId asc" for r in seen)


async def test_a_same_origin_next_link_is_followed_a_foreign_one_is_an_error_and_gets_nothing(
    serve: Any,
) -> None:
    state = {"n": 0}

    def page(request: web.Request) -> dict[str, Any]:
        state["n"] += 1
        if state["n"] == 1:  # a short page with a nextLink: not the end
            return {"odata.nextLink": "/Cust1/api/v1/Contact?page=2", "value": contacts_after(request, top=2)}
        if request.query.get("page") == "2":
            return {
                "odata.nextLink": "http://evil.example/steal",
                "value": [{"PrimaryKey": 3, "contactId": 3}],
            }
        return {"odata.nextLink": None, "value": contacts_after(request)}

    client, seen, origin = await serve(page)
    got: list[int] = []
    with pytest.raises(ForeignOriginError) as caught:
        async for row in client.list("contact", []):
            got.append(row.id)
    assert got == [1, 2, 3]
    assert seen[1].query.get("page") == "2"  # followed on the configured origin
    assert len(seen) == 2  # nothing more was asked (and evil.example got no request: no DNS, no credentials)
    assert "evil.example" in caught.value.message and origin in caught.value.message


async def test_a_listing_that_does_not_advance_ends_with_an_error_not_a_loop(serve: Any) -> None:
    client, seen, _ = await serve(
        lambda r: {"value": [{"PrimaryKey": "1"}, {"PrimaryKey": "2"}, {"PrimaryKey": "3"}]}
    )
    with pytest.raises(ApiError):  # the page repeats the first one's rows
        _ = [row async for row in client.list("contact", [])]
    assert len(seen) == 2


async def test_a_next_link_that_repeats_itself_ends_the_pass_with_an_error(serve: Any) -> None:
    client, seen, origin = await serve(
        lambda r: {"odata.nextLink": f"{origin}/Cust1/api/v1/archive/dynamic?again=1", "value": []}
    )
    with pytest.raises(ApiError, match="page already read"):
        _ = [page async for page in client.picture_links("person")]
    assert len(seen) == 2


async def test_picture_pass_pages_on_the_link_id_and_reads_string_or_number_keys(serve: Any) -> None:
    def page(request: web.Request) -> dict[str, Any]:
        last = int(request.query["$filter"].rsplit(" ", 1)[1])
        rows = [
            {
                "PrimaryKey": str(i) if i % 2 else i,
                superoffice.OWNER: 100 + i,
                superoffice.RANK: 1,
                superoffice.BLOB_ID: str(500 + i),
                "BinaryObjectLink:binaryObjectId.registered": "2024-05-01T10:00:00Z",
            }
            for i in range(last + 1, 8)
        ][:3]
        return {"odata.nextLink": None, "value": rows}

    client, seen, _ = await serve(page)
    links = [lk for p in [p async for p in client.picture_links("person")] for lk in p]
    assert [(lk.owner_id, lk.blob_id) for lk in links] == [(100 + i, 500 + i) for i in range(1, 8)]
    first = seen[0].query
    assert first["$orderBy"] == superoffice.LINK_ID and first["$top"] == "3"
    assert "ownerTable eq 6 and BinaryObjectLink.linkType eq 1" in first["$filter"]
    assert first["$filter"].endswith(f"{superoffice.LINK_ID} gt 0") and "$skip" not in first


async def test_picture_pass_with_ids_going_backwards_is_incomplete(serve: Any) -> None:
    rows = [{"PrimaryKey": str(i), superoffice.OWNER: i, superoffice.BLOB_ID: i} for i in (5, 6, 4)]
    client, _, _ = await serve(lambda r: {"value": rows})
    with pytest.raises(IncompletePass, match="strictly increasing"):
        _ = [p async for p in client.picture_links("contact")]


def test_provider_dates_are_compared_in_one_form() -> None:
    same = {
        "2024-05-01T10:00:00",
        "2024-05-01T10:00:00Z",
        "2024-05-01T12:00:00+02:00",
        "2024-05-01 10:00:00.000",
    }
    assert {normalize_date(v) for v in same} == {"2024-05-01T10:00:00"}
    assert {normalize_date(v) for v in (None, "", 0, "0", "0001-01-01T00:00:00", "1900-01-01")} == {""}
    assert normalize_date("01.05.2024") == "01.05.2024"  # an unknown form is kept as it is


async def test_the_store_keeps_the_lowest_ranked_link_of_an_owner() -> None:
    async with RunStore.open(MatchRule.of("code", "number", None), "person", "employees") as store:
        await store.add_pictures([(7, 2, 10, 100, "rank2"), (8, 1, 11, 110, "only")])
        await store.add_pictures([(7, 1, 12, 120, "rank1"), (7, 3, 9, 90, "rank3")])
        assert await store.pictures([7, 8, 9]) == {7: (120, "rank1"), 8: (110, "only")}
