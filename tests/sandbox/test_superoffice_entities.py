"""GET Contact/{id} and Person/{id}: entity JSON, 404 body, Last-Modified / If-Modified-Since, tenants."""

from __future__ import annotations

from tests.support.so_fixtures import RunningSO


async def test_contact_entity_carries_the_matching_fields(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/1") as r:
        assert r.status == 200
        assert r.headers["Last-Modified"] == "Fri, 01 Mar 2024 12:00:00 GMT"
        body = await r.json()
    assert body["ContactId"] == 1
    assert body["Name"] == "Acme AS"
    assert body["Number1"] == "10001"
    assert body["Number2"] == "C00001"
    assert body["OrgNr"] == "NO911111111"
    assert body["UpdatedDate"] == "2024-03-01T12:00:00"
    assert body["CreatedDate"] == "2024-01-10T08:00:00"
    assert body["Emails"][0]["Value"] == "post@acme.example"
    assert body["ActiveErpLinks"] == 0


async def test_person_entity_carries_names_number_and_contact(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Person/1") as r:
        assert r.status == 200
        body = await r.json()
    assert (body["PersonId"], body["Firstname"], body["Lastname"]) == (1, "Ada", "Lovelace")
    assert body["PersonNumber"] == "P0001"
    assert body["Contact"]["ContactId"] == 1
    assert body["UpdatedDate"] == "2024-03-02T08:00:00"


async def test_unknown_contact_is_404_with_superoffice_error_body(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/99999") as r:
        assert r.status == 404
        assert await r.json() == {
            "Error": True,
            "ErrorType": "SoNotFoundException",
            "ErrorMessage": "Contact id 99999 not found",
            "ErrorSource": "SuperOffice.Services.Implementation",
        }
    async with so.http.get(f"{so.api}/Person/77") as r:
        assert r.status == 404
        assert (await r.json())["ErrorMessage"] == "Person id 77 not found"


async def test_if_modified_since_answers_304_until_the_record_changes(so: RunningSO) -> None:
    url = f"{so.api}/Contact/1"
    async with so.http.get(url, headers={"If-Modified-Since": "Fri, 01 Mar 2024 12:00:00 GMT"}) as r:
        assert r.status == 304
        assert r.headers["Last-Modified"] == "Fri, 01 Mar 2024 12:00:00 GMT"
    async with so.http.get(url, headers={"If-Modified-Since": "Fri, 01 Mar 2024 11:59:59 GMT"}) as r:
        assert r.status == 200
    await so.admin("PATCH", "so/contact/1", json={"orgnr": "NO922222222"})
    async with so.http.get(url, headers={"If-Modified-Since": "Fri, 01 Mar 2024 12:00:00 GMT"}) as r:
        assert r.status == 200
        assert r.headers["Last-Modified"] == "Wed, 01 May 2024 00:00:00 GMT"
        assert (await r.json())["OrgNr"] == "NO922222222"


async def test_other_tenant_is_404_tenant_not_found(so: RunningSO) -> None:
    async with so.http.get(f"{so.origin}/Cust99999/api/v1/Contact/1") as r:
        assert r.status == 404
        body = await r.json()
    assert body["Error"] is True
    assert body["ErrorType"] == "SoTenantNotFoundException"
    assert "Cust99999" in body["ErrorMessage"]


async def test_paths_are_case_insensitive(so: RunningSO) -> None:
    for path in ("/Cust00001/api/v1/Contact/1", "/cust00001/API/V1/contact/1", "/CUST00001/api/v1/CONTACT/1"):
        async with so.http.get(so.origin + path) as r:
            assert r.status == 200, path
            assert (await r.json())["ContactId"] == 1


async def test_version_discovery_needs_no_auth(so: RunningSO) -> None:
    async with so.anon.get(f"{so.origin}/Cust00001/api") as r:
        assert r.status == 200
        body = await r.json()
    assert body["Version"] == "v1"
    assert body["v1"] == f"{so.origin}/Cust00001/api/v1"
