"""GET Contact / Person: the SimpleContact and Person archive listings and their query options."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.so_fixtures import RunningSO


async def list_rows(so: RunningSO, entity: str, **params: str) -> list[dict[str, Any]]:
    async with so.http.get(f"{so.api}/{entity}", params=params) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    rows: list[dict[str, Any]] = body["value"]
    return rows


async def ids(so: RunningSO, entity: str, **params: str) -> list[str]:
    return [r["PrimaryKey"] for r in await list_rows(so, entity, **params)]


async def test_contact_listing_has_the_odata_envelope_and_string_values(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact", params={"$select": "contactId,name,number,updatedDate"}) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        body = await r.json()
    port = so.origin.rsplit(":", 1)[1]
    assert body["odata.metadata"] == f"http://127.0.0.1:{port}/Cust00001/api/v1/Archive//$metadata"
    assert body["odata.nextLink"] is None
    assert body["value"][0] == {
        "PrimaryKey": "1",
        "EntityName": "contact",
        "contactId": "1",
        "name": "Acme AS",
        "number": "10001",
        "updatedDate": "2024-03-01T12:00:00",
    }
    assert len(body["value"]) == 5


async def test_listing_without_select_returns_default_columns(so: RunningSO) -> None:
    row = (await list_rows(so, "Contact"))[0]
    for col in (
        "contactId",
        "name",
        "number",
        "code",
        "orgnr",
        "email/emailAddress",
        "updatedDate",
        "registeredDate",
    ):
        assert col in row
    prow = (await list_rows(so, "Person"))[0]
    for col in (
        "personId",
        "contactId",
        "firstName",
        "lastName",
        "fullName",
        "personNumber",
        "personUpdatedDate",
        "personRegisteredDate",
    ):
        assert col in prow
    assert prow["EntityName"] == "person"
    assert prow["fullName"] == "Ada Lovelace"


async def test_person_listing_uses_person_updated_date_not_updated_date(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Person", params={"$select": "updatedDate"}) as r:
        assert r.status == 400
    rows = await list_rows(so, "Person", **{"$select": "personId,personUpdatedDate,retired"})
    assert rows[0]["personUpdatedDate"] == "2024-03-02T08:00:00"
    assert rows[2]["retired"] == "True"


async def test_every_simplecontact_column_is_selectable(so: RunningSO) -> None:
    cols = (
        "contactId,name,department,number,code,orgnr,email/emailAddress,updatedDate,registeredDate,"
        "category,business,country,activeErpLinks,contactDeleted,updatedBy,deletedDate"
    )
    rows = await list_rows(so, "Contact", **{"$select": cols})
    acme, gamma = rows[0], rows[2]
    assert acme["email/emailAddress"] == "post@acme.example"
    assert acme["category"] == "Kunde"
    assert acme["activeErpLinks"] == "False" and gamma["activeErpLinks"] == "True"
    assert acme["contactDeleted"] == "False"
    assert acme["deletedDate"] == ""
    assert all(isinstance(v, str) for v in acme.values())


async def test_json_safe_replaces_unsafe_characters_in_column_names(so: RunningSO) -> None:
    rows = await list_rows(so, "Contact", **{"$select": "contactId,email/emailAddress", "$jsonSafe": "true"})
    assert rows[0]["email_emailAddress"] == "post@acme.example"
    assert "email/emailAddress" not in rows[0]


async def test_triple_underscore_is_accepted_for_slash_in_queries(so: RunningSO) -> None:
    rows = await list_rows(
        so,
        "Contact",
        **{"$select": "email___emailAddress", "$filter": "email___emailAddress contains 'acme'"},
    )
    assert rows == [{"PrimaryKey": "1", "EntityName": "contact", "email/emailAddress": "post@acme.example"}]


async def test_full_mode_returns_typed_primary_key_and_column_objects(so: RunningSO) -> None:
    rows = await list_rows(so, "Contact", **{"$select": "name", "$mode": "Full", "$top": "1"})
    assert rows == [
        {
            "PrimaryKey": 1,
            "EntityName": "contact",
            "StyleHint": "",
            "LinkHint": "nav=contact&contact_id=1",
            "TableRight": {"Mask": 1, "Reason": ""},
            "Column": {
                "name": {"RawValue": "Acme AS", "DisplayValue": "Acme AS", "LinkHint": "", "TooltipHint": ""}
            },
        }
    ]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("contactId eq 3", ["3"]),
        ("contactId = 3", ["3"]),
        ("contactId ne 3", ["1", "2", "4", "5"]),
        ("contactId lt 3", ["1", "2"]),
        ("contactId gt 3", ["4", "5"]),
        ("contactId le 2", ["1", "2"]),
        ("contactId ge 4", ["4", "5"]),
        ("contactId oneOf (1,3, 5)", ["1", "3", "5"]),
        ("contactId notOneOf (1,3,5)", ["2", "4"]),
        ("contactId between (2,4)", ["2", "3", "4"]),
        ("name begins 'ac'", ["1"]),
        ("name contains 'ta'", ["2", "3", "4"]),
        ("name is 'EPSILON'", ["5"]),
        ("name isNot 'Acme AS'", ["2", "3", "4", "5"]),
        ("code is ''", ["5"]),
        ("code oneOf ('C00001','C00004')", ["1", "4"]),
        ("registeredDate before '2024-2-15'", ["1", "2"]),
        ("registeredDate after '2024-02-15'", ["4", "5"]),
        ("updatedDate date '2024-03-05'", ["2", "3"]),
        ("updatedDate afterTime '2024-03-05T09:30:00'", ["3", "4", "5"]),
        ("updatedDate beforeTime '2024-03-05T09:30:00'", ["1"]),
        ("updatedDate dateTime '2024-03-05T09:30:00'", ["2"]),
        ("updatedDate afterTime '2024-03-05T11:00:00+01:00'", ["4", "5"]),
        ("activeErpLinks eq 1", ["3"]),
        ("country is 'Norway' and contactId gt 1", ["3"]),
        (
            "updatedDate afterTime '2024-03-01T00:00:00' AND name contains 'a' and contactId oneOf (2,3)",
            ["2", "3"],
        ),
    ],
)
async def test_contact_filter_operators(so: RunningSO, flt: str, expected: list[str]) -> None:
    assert await ids(so, "Contact", **{"$select": "contactId", "$filter": flt}) == expected


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("personUpdatedDate afterTime '2024-03-03T08:00:00'", ["3", "4"]),
        ("personRegisteredDate before '2024-01-13'", ["1", "2"]),
        ("contactId eq 1", ["1", "2"]),
        ("personNumber begins 'p000'", ["1", "2", "3"]),
        ("retired eq 0", ["1", "2", "4"]),
        ("fullName contains 'love'", ["1"]),
    ],
)
async def test_person_filter_operators(so: RunningSO, flt: str, expected: list[str]) -> None:
    assert await ids(so, "Person", **{"$select": "personId", "$filter": flt}) == expected


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"$filter": "nosuch eq 1"}, "nosuch"),
        ({"$filter": "contactId like 1"}, "like"),
        ({"$filter": "updatedDate gt '2024-01-01'"}, "gt"),
        ({"$filter": "contactId eq abc"}, "abc"),
        ({"$filter": "updatedDate afterTime 'yesterday'"}, "yesterday"),
        ({"$filter": "contactId eq 1 or contactId eq 2"}, "or"),
        ({"$filter": "contactId eq"}, "incomplete"),
        ({"$select": "name,nosuch"}, "nosuch"),
        ({"$orderBy": "nosuch"}, "nosuch"),
        ({"$orderBy": "name sideways"}, "sideways"),
        ({"$top": "ten"}, "$top"),
        ({"$skip": "-1"}, "$skip"),
        ({"$mode": "Huge"}, "$mode"),
    ],
)
async def test_bad_query_is_400_with_superoffice_error_json(
    so: RunningSO, params: dict[str, str], needle: str
) -> None:
    async with so.http.get(f"{so.api}/Contact", params=params) as r:
        assert r.status == 400
        body = await r.json()
    assert body["Error"] is True
    assert body["ErrorType"] == "ArgumentException"
    assert needle in body["ErrorMessage"]
    assert body["ErrorSource"] == "SuperOffice.Services.Implementation"


async def test_order_by_single_and_multiple_columns(so: RunningSO) -> None:
    assert await ids(so, "Contact", **{"$orderBy": "name desc"}) == ["3", "5", "4", "2", "1"]
    order = {"$orderBy": "updatedDate asc,contactId desc"}
    assert await ids(so, "Contact", **order) == ["1", "2", "3", "5", "4"]
    assert await ids(so, "Contact", **{"$orderBy": "country desc, contactId asc"}) == [
        "2",
        "1",
        "3",
        "4",
        "5",
    ]
    assert await ids(so, "Person", **{"$orderBy": "contactId desc,personId"}) == ["3", "4", "1", "2"]


async def test_top_and_skip_page_through_a_stable_order(so: RunningSO) -> None:
    pages = []
    for skip in (0, 2, 4, 6):
        pages.append(await ids(so, "Contact", **{"$orderBy": "contactId", "$top": "2", "$skip": str(skip)}))
    assert pages == [["1", "2"], ["3", "4"], ["5"], []]
    assert await ids(so, "Contact", **{"$top": "0"}) == []


async def test_query_option_names_and_paths_are_case_insensitive(so: RunningSO) -> None:
    async with so.http.get(
        f"{so.origin}/cust00001/API/v1/contact", params={"$SELECT": "name", "$TOP": "1"}
    ) as r:
        assert r.status == 200
        assert (await r.json())["value"] == [{"PrimaryKey": "1", "EntityName": "contact", "name": "Acme AS"}]


async def test_archive_endpoint_serves_the_same_providers(so: RunningSO) -> None:
    for provider, first in (("SimpleContact", "Acme AS"), ("Person", "Ada")):
        col = "name" if provider == "SimpleContact" else "firstName"
        rows = await list_rows(so, f"Archive/{provider}", **{"$select": col, "$top": "1"})
        assert rows[0][col] == first
    async with so.http.get(f"{so.api}/Archive/dynamic") as r:
        assert r.status == 400


async def test_edited_contact_shows_up_after_the_watermark(so: RunningSO) -> None:
    before = await ids(so, "Contact", **{"$filter": "updatedDate afterTime '2024-04-15T00:00:00'"})
    assert before == []
    so.emulator.clock = lambda: 1_714_600_000.0  # 2024-05-01T21:46:40Z
    r = await so.admin("PATCH", "so/contact/2", json={"name": "Beta Bygg AS"})
    assert r.status == 200
    rows = await list_rows(
        so,
        "Contact",
        **{"$select": "name,updatedDate", "$filter": "updatedDate afterTime '2024-04-15T00:00:00'"},
    )
    assert rows == [
        {
            "PrimaryKey": "2",
            "EntityName": "contact",
            "name": "Beta Bygg AS",
            "updatedDate": "2024-05-01T21:46:40",
        }
    ]
