"""Business Central emulator: routing, collections, etags, $filter/$select/$expand, server-driven paging."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.bc_fixtures import (
    COMPANY,
    CUST1,
    CUST2,
    EMP1,
    ENVIRONMENT,
    ITEM1,
    ITEM2,
    ONPREM_KEY,
    ONPREM_USER,
    OTHER_COMPANY,
    OTHER_CUST,
    TENANT,
    RunningBC,
    basic,
    decode_etag,
    running_bc,
)


@pytest.fixture
async def bc() -> AsyncIterator[RunningBC]:
    async with running_bc() as running:
        yield running


def numbers(body: dict[str, object]) -> list[str]:
    rows = body["value"]
    assert isinstance(rows, list)
    return [row["number"] for row in rows]


# -- companies and routing ---------------------------------------------------------------------------
async def test_companies_list_has_odata_context_and_documented_fields(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.api()}/companies")
    assert resp.status == 200
    assert body["@odata.context"] == f"{bc.api()}/$metadata#companies"
    cronus = next(c for c in body["value"] if c["name"] == "CRONUS")
    assert cronus["id"] == COMPANY
    assert set(cronus) >= {"id", "systemVersion", "name", "displayName", "businessProfileId"}


async def test_single_company_by_unquoted_guid(bc: RunningBC) -> None:
    resp, body = await bc.get(bc.company(company=OTHER_COMPANY))
    assert resp.status == 200
    assert body["name"] == "Other Co"
    assert body["@odata.context"].endswith("$metadata#companies/$entity")


async def test_tenantless_url_takes_tenant_from_token(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.origin}/v2.0/{ENVIRONMENT}/api/v2.0/companies({COMPANY})/customers")
    assert resp.status == 200
    assert numbers(body)[0] == "C00001"


async def test_company_as_query_option_lists_that_company(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.api()}/customers", params={"company": OTHER_COMPANY})
    assert resp.status == 200
    assert [r["id"] for r in body["value"]] == [OTHER_CUST]
    resp, body = await bc.get(f"{bc.api()}/customers({CUST2})/picture", params={"company": COMPANY})
    assert resp.status == 200 and body["id"] == CUST2


async def test_missing_company_is_an_error_naming_the_company_option(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.api()}/customers")
    assert resp.status == 400
    assert body["error"]["code"] == "Internal_CompanyNotFound"
    assert "company=[name]" in body["error"]["message"]


async def test_on_premises_route_with_web_service_access_key(bc: RunningBC) -> None:
    url = f"{bc.origin}/BC/api/v2.0/companies({COMPANY})/customers({CUST1})/picture"
    resp = await bc.anon.get(url, headers={"Authorization": basic(ONPREM_USER, ONPREM_KEY)})
    body = await resp.json()
    assert resp.status == 200
    assert body["width"] == 40
    assert body["pictureContent@odata.mediaEditLink"].startswith(f"{bc.origin}/BC/api/v2.0/companies(")


async def test_old_online_v1_url_form(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.origin}/v1.0/{TENANT}/api/v1.0/companies({COMPANY})/items")
    assert resp.status == 200
    assert numbers(body) == ["1000", "1001"]


async def test_unknown_environment_is_404(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.origin}/v2.0/{TENANT}/sandbox2/api/v2.0/companies")
    assert resp.status == 404
    assert body["error"]["message"].endswith(".")


async def test_unknown_company_and_record_are_404_not_found(bc: RunningBC) -> None:
    missing = "00000000-1111-2222-3333-444444444444"
    for url in (f"{bc.company(company=missing)}/customers", f"{bc.company()}/customers({missing})/picture"):
        resp, body = await bc.get(url)
        assert resp.status == 404, url
        assert body["error"]["code"] == "BadRequest_NotFound"
        assert re.search(r"  CorrelationId:  [0-9a-f-]{36}\.$", body["error"]["message"])


async def test_unknown_entity_set_segment_is_404(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.company()}/customer({CUST1})/picture")
    assert resp.status == 404
    assert body["error"]["code"] == "BadRequest_ResourceNotFound"
    assert "'customer'" in body["error"]["message"]


async def test_quoted_or_malformed_key_is_a_bad_request(bc: RunningBC) -> None:
    for key in (f"'{CUST1}'", "C00001"):
        resp, body = await bc.get(f"{bc.company()}/customers({key})")
        assert resp.status == 400, key
        assert body["error"]["code"] == "BadRequest_NotFound"


# -- collection shape and etags -----------------------------------------------------------------------
async def test_collection_rows_carry_documented_fields_and_weak_etags(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.company()}/customers")
    assert resp.status == 200
    assert body["@odata.context"] == f"{bc.api()}/$metadata#companies({COMPANY})/customers"
    first = body["value"][0]
    assert list(first)[:4] == ["@odata.etag", "id", "number", "displayName"]
    assert first["email"] == "post@acme.example"
    assert first["lastModifiedDateTime"] == "2024-03-01T10:00:00.05Z"
    assert "@odata.nextLink" not in body
    decoded = decode_etag(first["@odata.etag"])
    assert re.fullmatch(r"'(\d+);(\d+)1;00;'", decoded)
    length, value = decoded[1:].split(";")[:2]
    assert int(length) == len(value) - 1
    assert first["@odata.etag"].startswith('W/"JzE5O')  # like BC's: '19;<19 digits>1;00;'
    etags = {row["@odata.etag"] for row in body["value"]}
    assert len(etags) == len(body["value"])  # one row version per record


async def test_rows_are_in_primary_key_order(bc: RunningBC) -> None:
    _, body = await bc.get(f"{bc.company()}/customers")
    assert numbers(body) == ["C00001", "C00002", "C00003", "C00004", "C00005"]


async def test_employee_and_item_fields(bc: RunningBC) -> None:
    _, emp = await bc.get(f"{bc.company()}/employees({EMP1})")
    assert (emp["givenName"], emp["surname"], emp["personalEmail"]) == ("Ada", "Lovelace", "ada@home.example")
    assert emp["@odata.context"].endswith("/employees/$entity")
    _, item = await bc.get(f"{bc.company()}/items({ITEM2})")
    assert (item["type"], item["blocked"]) == ("Service", True)


async def test_select_limits_fields_but_keeps_the_etag(bc: RunningBC) -> None:
    _, body = await bc.get(f"{bc.company()}/customers", params={"$select": "number,email"})
    assert body["@odata.context"].endswith("/customers(number,email)")
    assert set(body["value"][0]) == {"@odata.etag", "number", "email"}


async def test_select_of_unknown_property_is_400(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.company()}/customers", params={"$select": "number,colour"})
    assert resp.status == 400
    assert "'colour'" in body["error"]["message"]


# -- $filter -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("number eq 'C00002'", ["C00002"]),
        ("number ne 'C00002'", ["C00001", "C00003", "C00004", "C00005"]),
        ("number gt 'C00003'", ["C00004", "C00005"]),
        ("number le 'C00002'", ["C00001", "C00002"]),
        ("displayName eq 'Gamma Data'", ["C00003"]),
        ("email eq 'delta@drift.example'", ["C00004"]),
        ("email eq ''", ["C00003", "C00005"]),
        (f"id eq {CUST2}", ["C00002"]),
        (f"id eq {CUST2.upper()}", ["C00002"]),
        ("lastModifiedDateTime gt 2024-03-03T10:00:00.250Z", ["C00004", "C00005"]),
        ("lastModifiedDateTime ge 2024-03-03T10:00:00.250Z", ["C00003", "C00004", "C00005"]),
        ("lastModifiedDateTime lt 2024-03-02T11:00:00+01:00", ["C00001"]),
        ("lastModifiedDateTime lt 2024-03-02T12:00:00+01:00", ["C00001", "C00002"]),
        ("number eq 'C00001' or number eq 'C00004'", ["C00001", "C00004"]),
        ("number ge 'C00002' and email ne ''", ["C00002", "C00004"]),
        ("(number eq 'C00001' or number eq 'C00002') and email ne ''", ["C00001", "C00002"]),
        ("not (number lt 'C00004')", ["C00004", "C00005"]),
        ("startswith(displayName,'Be')", ["C00002"]),
        ("contains(email,'example') eq false", ["C00003", "C00005"]),
        ("tolower(displayName) eq 'epsilon'", ["C00005"]),
        ("number in ('C00003','C00005')", ["C00003", "C00005"]),
        ("'C00004' lt number", ["C00005"]),
    ],
)
async def test_filter_expressions(bc: RunningBC, expression: str, expected: list[str]) -> None:
    resp, body = await bc.get(f"{bc.company()}/customers", params={"$filter": expression})
    assert resp.status == 200, body
    assert numbers(body) == expected


async def test_or_across_two_different_fields_is_refused_like_bc(bc: RunningBC) -> None:
    resp, body = await bc.get(
        f"{bc.company()}/customers", params={"$filter": "number eq 'C00001' or email eq 'x@y'"}
    )
    assert resp.status == 400
    assert "The 'OR' operator is not supported on distinct fields" in body["error"]["message"]


@pytest.mark.parametrize(
    "expression",
    [
        "lastModifiedDateTime gt '2024-03-01T00:00:00Z'",  # datetimes are unquoted
        f"id eq '{CUST1}'",  # so are GUIDs
        "number eq C00001",  # strings are quoted
        "colour eq 'red'",
        "number eq",
        "number eq 'C00001' and",
        "number xx 'C00001'",
    ],
)
async def test_malformed_or_mistyped_filters_are_400(bc: RunningBC, expression: str) -> None:
    resp, body = await bc.get(f"{bc.company()}/customers", params={"$filter": expression})
    assert resp.status == 400, expression
    assert body["error"]["code"].startswith("BadRequest")


async def test_filter_on_a_value_the_server_returned_excludes_that_record(bc: RunningBC) -> None:
    _, body = await bc.get(f"{bc.company()}/customers({CUST2})")
    stamp = body["lastModifiedDateTime"]
    _, later = await bc.get(
        f"{bc.company()}/customers", params={"$filter": f"lastModifiedDateTime gt {stamp}"}
    )
    assert "C00002" not in numbers(later)
    assert numbers(later)[0] == "C00003"


async def test_top_skip_orderby_and_count(bc: RunningBC) -> None:
    _, body = await bc.get(
        f"{bc.company()}/customers",
        params={"$orderby": "displayName desc", "$top": "2", "$skip": "1", "$count": "true"},
    )
    assert [r["displayName"] for r in body["value"]] == ["Epsilon", "Delta Drift"]
    assert body["@odata.count"] == 5
    assert "@odata.nextLink" not in body


async def test_unknown_system_query_option_is_400(bc: RunningBC) -> None:
    resp, body = await bc.get(f"{bc.company()}/customers", params={"$search": "acme"})
    assert resp.status == 400
    assert "$search" in body["error"]["message"]


# -- $expand ------------------------------------------------------------------------------------------
async def test_expand_picture_embeds_one_object_in_v2(bc: RunningBC) -> None:
    _, body = await bc.get(f"{bc.company()}/customers", params={"$expand": "picture", "$top": "2"})
    with_pic, without = body["value"]
    assert isinstance(with_pic["picture"], dict)
    assert with_pic["picture"]["id"] == CUST1
    assert (with_pic["picture"]["width"], with_pic["picture"]["height"]) == (40, 30)
    assert with_pic["picture"]["parentType"] == "Customer"
    assert with_pic["picture"]["@odata.etag"].startswith('W/"')
    assert with_pic["picture"]["pictureContent@odata.mediaEditLink"] == (
        f"{bc.company()}/customers({CUST1})/picture/pictureContent"
    )
    assert (without["picture"]["width"], without["picture"]["contentType"]) == (0, "")


async def test_expand_picture_in_v1_is_a_collection_with_content_links(bc: RunningBC) -> None:
    _, body = await bc.get(f"{bc.company('v1.0')}/items", params={"$expand": "picture"})
    item = body["value"][0]
    assert isinstance(item["picture"], list) and len(item["picture"]) == 1
    picture = item["picture"][0]
    assert "parentType" not in picture
    assert picture["contentType"] == "image/gif"
    assert (
        picture["content@odata.mediaEditLink"]
        == f"{bc.company('v1.0')}/items({ITEM1})/picture({ITEM1})/content"
    )


async def test_beta_endpoint_speaks_the_v1_dialect(bc: RunningBC) -> None:
    _, body = await bc.get(f"{bc.company('beta')}/items({ITEM1})/picture")
    assert body["value"][0]["content@odata.mediaReadLink"].endswith(f"/picture({ITEM1})/content")


async def test_nested_select_inside_expand_is_honoured(bc: RunningBC) -> None:
    _, body = await bc.get(
        f"{bc.company()}/customers({CUST1})",
        params={"$select": "number", "$expand": "picture($select=width,height)"},
    )
    assert set(body) == {"@odata.context", "@odata.etag", "number", "picture"}
    assert set(body["picture"]) == {"@odata.etag", "width", "height"}


async def test_expand_of_unknown_navigation_is_400(bc: RunningBC) -> None:
    resp, _ = await bc.get(f"{bc.company()}/customers", params={"$expand": "pictures"})
    assert resp.status == 400


# -- server-driven paging ----------------------------------------------------------------------------
async def collect(bc: RunningBC, url: str, **kwargs: object) -> tuple[list[str], list[str]]:
    """Follow nextLinks unchanged; returns the numbers seen and the links followed."""
    seen: list[str] = []
    links: list[str] = []
    next_url: str | None = url
    while next_url:
        resp, body = await bc.get(next_url, **kwargs)
        assert resp.status == 200, body
        seen += numbers(body)
        next_url = body.get("@odata.nextLink")
        if next_url:
            links.append(next_url)
        kwargs.pop("params", None)
    return seen, links


async def test_maxpagesize_preference_pages_with_absolute_next_links(bc: RunningBC) -> None:
    url = f"{bc.company()}/customers"
    resp, body = await bc.get(url, headers={"Prefer": "odata.maxpagesize=2"})
    assert resp.headers["Preference-Applied"] == "odata.maxpagesize=2"
    assert numbers(body) == ["C00001", "C00002"]
    link = body["@odata.nextLink"]
    assert link.startswith(f"{url}?")
    assert "$skiptoken" in parse_qs(urlsplit(link).query)
    seen, links = await collect(bc, url, headers={"Prefer": "odata.maxpagesize=2"})
    assert seen == ["C00001", "C00002", "C00003", "C00004", "C00005"]
    assert len(links) == 2


async def test_next_link_keeps_filter_select_and_expand(bc: RunningBC) -> None:
    params = {"$filter": "number ne 'C00003'", "$select": "number", "$expand": "picture"}
    seen, links = await collect(
        bc, f"{bc.company()}/customers", params=params, headers={"Prefer": "odata.maxpagesize=1"}
    )
    assert seen == ["C00001", "C00002", "C00004", "C00005"]
    query = parse_qs(urlsplit(links[0]).query)
    assert query["$filter"] == ["number ne 'C00003'"] and query["$expand"] == ["picture"]


async def test_next_link_round_trips_a_timezone_offset_in_the_filter(bc: RunningBC) -> None:
    params = {"$filter": "lastModifiedDateTime gt 2024-03-01T12:00:00+01:00"}
    seen, links = await collect(
        bc, f"{bc.company()}/customers", params=params, headers={"Prefer": "odata.maxpagesize=2"}
    )
    assert seen == ["C00002", "C00003", "C00004", "C00005"]
    assert "%2B01:00" in links[0]


async def test_next_link_works_without_resending_prefer(bc: RunningBC) -> None:
    _, body = await bc.get(f"{bc.company()}/customers", headers={"Prefer": "odata.maxpagesize=2"})
    _, page2 = await bc.get(body["@odata.nextLink"])
    assert numbers(page2) == ["C00003", "C00004"]


async def test_default_max_page_size_knob_pages_without_prefer() -> None:
    async with running_bc(max_page_size=3) as bc:
        seen, links = await collect(bc, f"{bc.company()}/customers")
        assert seen == ["C00001", "C00002", "C00003", "C00004", "C00005"]
        assert len(links) == 1


async def test_preference_above_the_maximum_is_capped() -> None:
    async with running_bc(max_page_size=3) as bc:
        resp, body = await bc.get(f"{bc.company()}/customers", headers={"Prefer": "odata.maxpagesize=50000"})
        assert resp.status == 200
        assert resp.headers["Preference-Applied"] == "odata.maxpagesize=3"
        assert len(body["value"]) == 3


async def test_preference_above_the_maximum_can_be_413() -> None:
    async with running_bc(max_page_size=3, oversize_page_preference="413") as bc:
        resp, body = await bc.get(f"{bc.company()}/customers", headers={"Prefer": "odata.maxpagesize=4"})
        assert resp.status == 413
        assert body["error"]["message"]


async def test_top_larger_than_a_page_continues_and_stops_at_top(bc: RunningBC) -> None:
    seen, links = await collect(
        bc, f"{bc.company()}/customers", params={"$top": "3"}, headers={"Prefer": "odata.maxpagesize=2"}
    )
    assert seen == ["C00001", "C00002", "C00003"]
    assert len(links) == 1


async def test_paging_survives_a_record_changing_between_pages(bc: RunningBC) -> None:
    _, body = await bc.get(f"{bc.company()}/customers", headers={"Prefer": "odata.maxpagesize=2"})
    bc.state.set_picture(COMPANY, "customers", CUST1, None)  # C00001 modified after page 1
    seen, _ = await collect(bc, body["@odata.nextLink"])
    assert seen == ["C00003", "C00004", "C00005"]


async def test_tampered_skiptoken_is_400(bc: RunningBC) -> None:
    resp, _ = await bc.get(f"{bc.company()}/customers", params={"$skiptoken": "not-a-token"})
    assert resp.status == 400
