"""Contact/Person Image and ImageInfo: as stored, scaled, converted, ifBlank, uploads and deletes."""

from __future__ import annotations

import base64
import io
import json

import aiohttp
import pytest
from PIL import Image

from tests.support.so_fixtures import (
    BROKEN_HTML,
    RunningSO,
    SOFactory,
    gif_bytes,
    jpeg_bytes,
    png_alpha_bytes,
)


def open_image(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


async def test_image_without_parameters_is_the_stored_bytes_with_stored_mime(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/1/Image") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/jpeg"
        assert await r.read() == jpeg_bytes()
    async with so.http.get(f"{so.api}/Contact/3/Image") as r:
        assert r.headers["Content-Type"] == "image/png"
        assert await r.read() == png_alpha_bytes()


async def test_lazily_generated_person_picture_is_served(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Person/1/Image") as r:
        assert r.status == 200
        assert await r.read() == jpeg_bytes(colour=(10, 200, 10))


async def test_broken_picture_is_served_as_stored(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/4/Image") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/jpeg"
        assert await r.read() == BROKEN_HTML


async def test_broken_picture_cannot_be_scaled(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/4/Image", params={"w": "10"}) as r:
        assert r.status == 500
        assert (await r.json())["ErrorMessage"] == "Parameter is not valid."


@pytest.mark.parametrize(
    ("params", "size", "fmt", "mime"),
    [
        ({"w": "20"}, (20, 15), "JPEG", "image/jpeg"),
        ({"h": "60"}, (80, 60), "JPEG", "image/jpeg"),
        ({"w": "20", "h": "20"}, (20, 15), "JPEG", "image/jpeg"),
        ({"type": "PNG"}, (40, 30), "PNG", "image/png"),
        ({"type": "gif", "w": "8"}, (8, 6), "GIF", "image/gif"),
    ],
)
async def test_image_is_scaled_and_converted_on_request(
    so: RunningSO, params: dict[str, str], size: tuple[int, int], fmt: str, mime: str
) -> None:
    async with so.http.get(f"{so.api}/Contact/1/Image", params=params) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == mime
        im = open_image(await r.read())
    assert im.size == size
    assert im.format == fmt


async def test_png_with_alpha_converted_to_jpeg_is_flattened(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/3/Image", params={"type": "JPEG"}) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
        im = open_image(await r.read())
    assert im.mode == "RGB"


async def test_bad_image_parameters_are_400(so: RunningSO) -> None:
    for params in ({"type": "aut"}, {"w": "x"}, {"ifBlank": "Sometimes"}, {"w": "100000"}):
        async with so.http.get(f"{so.api}/Contact/1/Image", params=params) as r:
            assert r.status == 400, params
            assert (await r.json())["Error"] is True


async def test_blank_contact_image_is_404(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/2/Image") as r:
        assert r.status == 404
        body = await r.json()
    assert body["ErrorType"] == "SoNotFoundException"
    assert body["ErrorMessage"] == "No image on this contact"
    async with so.http.get(f"{so.api}/Person/2/Image", params={"ifBlank": "Null"}) as r:
        assert r.status == 404
        assert (await r.json())["ErrorMessage"] == "No image on this person"


async def test_image_of_unknown_entity_is_404(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Person/999/Image", params={"ifBlank": "ClearPixel"}) as r:
        assert r.status == 404
        assert (await r.json())["ErrorMessage"] == "Person id 999 not found"


async def test_if_blank_clear_pixel_is_a_transparent_1x1_png(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/2/Image", params={"ifBlank": "ClearPixel"}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/png"
        im = open_image(await r.read())
    assert im.size == (1, 1)
    assert im.convert("RGBA").getpixel((0, 0))[3] == 0


@pytest.mark.parametrize("variant", ["Default", "SrNoPhoto", "SrNoPhotoWithBorder", "GenericFileIcon"])
async def test_if_blank_placeholders_are_pictures(so: RunningSO, variant: str) -> None:
    async with so.http.get(f"{so.api}/Contact/2/Image", params={"ifBlank": variant}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/png"
        im = open_image(await r.read())
    assert im.size[0] > 1
    async with so.http.get(
        f"{so.api}/Contact/2/Image", params={"ifBlank": variant, "w": "32", "type": "JPEG"}
    ) as r:
        im = open_image(await r.read())
    assert (im.format, im.size) == ("JPEG", (32, 32))


async def test_if_blank_is_ignored_when_there_is_a_picture(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/1/Image", params={"ifBlank": "ClearPixel"}) as r:
        assert await r.read() == jpeg_bytes()


async def test_json_accept_gets_raw_bytes_unless_the_quirk_is_on(make_so: SOFactory) -> None:
    plain = await make_so()
    async with plain.http.get(f"{plain.api}/Contact/1/Image", headers={"Accept": "application/json"}) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
    quirky = await make_so(json_image_on_json_accept=True)
    headers = {"Accept": "application/json; charset=utf-8"}
    async with quirky.http.get(f"{quirky.api}/Contact/1/Image", headers=headers) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert base64.b64decode(json.loads(await r.text())) == jpeg_bytes()
    headers = {"Accept": "image/png, image/jpeg, application/json"}
    async with quirky.http.get(f"{quirky.api}/Contact/1/Image", headers=headers) as r:
        assert r.headers["Content-Type"] == "image/jpeg"


async def test_image_info_of_a_picture_is_a_blob_entity(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/1/ImageInfo") as r:
        assert r.status == 200
        assert r.headers["Last-Modified"] == "Thu, 01 Feb 2024 10:00:00 GMT"
        info = await r.json()
    assert set(info) == {
        "BlobId",
        "BlobSize",
        "Description",
        "ExtraInfo",
        "IsEncrypted",
        "IsZipped",
        "MimeType",
        "OriginalSize",
        "CreatedDate",
        "UpdatedDate",
        "CreatedBy",
        "UpdatedBy",
        "ConceptualType",
        "TableRight",
        "FieldProperties",
    }
    assert info["BlobSize"] == info["OriginalSize"] == len(jpeg_bytes())
    assert info["MimeType"] == "image/jpeg"
    assert info["UpdatedDate"] == "2024-02-01T10:00:00"
    assert info["ConceptualType"] == "CONTACTIMAGE"
    async with so.http.get(f"{so.api}/Person/1/Imageinfo") as r:
        assert (await r.json())["ConceptualType"] == "PERSONPHOTO"


async def test_image_info_without_a_picture_is_200_with_an_empty_body(so: RunningSO) -> None:
    async with so.http.get(f"{so.api}/Contact/2/ImageInfo") as r:
        assert r.status == 200
        assert await r.read() == b""
    async with so.http.get(f"{so.api}/Contact/424242/ImageInfo") as r:
        assert r.status == 404


async def test_put_image_info_updates_description_and_extra_info(so: RunningSO) -> None:
    async with so.http.put(
        f"{so.api}/Contact/1/ImageInfo", json={"Description": "logo", "ExtraInfo": "x"}
    ) as r:
        assert r.status == 200
        info = await r.json()
    assert (info["Description"], info["ExtraInfo"]) == ("logo", "x")
    async with so.http.get(f"{so.api}/Contact/1/ImageInfo") as r:
        assert (await r.json())["Description"] == "logo"


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_uploading_an_image_updates_image_info_but_not_updated_date(so: RunningSO, method: str) -> None:
    old_info = await (await so.http.get(f"{so.api}/Contact/2/ImageInfo")).read()
    assert old_info == b""
    new = gif_bytes()
    async with so.http.request(
        method, f"{so.api}/Contact/2/Image", data=new, headers={"Content-Type": "image/gif"}
    ) as r:
        assert r.status == 200
        blob_id = await r.json()
    assert isinstance(blob_id, int)
    async with so.http.get(f"{so.api}/Contact/2/ImageInfo") as r:
        info = await r.json()
    assert info["BlobId"] == blob_id
    assert info["MimeType"] == "image/gif"
    assert info["BlobSize"] == len(new)
    assert info["UpdatedDate"] == "2024-05-01T00:00:00"
    async with so.http.get(f"{so.api}/Contact/2/Image") as r:
        assert await r.read() == new
    async with so.http.get(f"{so.api}/Contact/2") as r:
        assert (await r.json())["UpdatedDate"] == "2024-03-05T09:30:00"


async def test_replacing_an_image_gives_a_new_blob_id_and_mime_from_magic(so: RunningSO) -> None:
    before = await (await so.http.get(f"{so.api}/Person/1/ImageInfo")).json()
    png = png_alpha_bytes((5, 5))
    async with so.http.put(f"{so.api}/Person/1/Image", data=png, headers={"Content-Type": "image/jpeg"}) as r:
        blob_id = await r.json()
    after = await (await so.http.get(f"{so.api}/Person/1/ImageInfo")).json()
    assert blob_id != before["BlobId"] and after["BlobId"] == blob_id
    assert after["MimeType"] == "image/png"


async def test_multipart_upload_is_accepted(so: RunningSO) -> None:
    form = aiohttp.FormData()
    form.add_field("file", jpeg_bytes((7, 7)), filename="logo.jpg", content_type="image/jpeg")
    async with so.http.post(f"{so.api}/Contact/5/Image", data=form) as r:
        assert r.status == 200
    async with so.http.get(f"{so.api}/Contact/5/Image") as r:
        assert await r.read() == jpeg_bytes((7, 7))


async def test_empty_upload_and_unknown_id_are_400(so: RunningSO) -> None:
    async with so.http.put(f"{so.api}/Contact/2/Image", data=b"", headers={"Content-Type": "image/png"}) as r:
        assert r.status == 400
        assert (await r.json())["Error"] is True
    async with so.http.put(
        f"{so.api}/Contact/999/Image", data=gif_bytes(), headers={"Content-Type": "image/gif"}
    ) as r:
        assert r.status == 400


async def test_delete_image_is_204_and_leaves_updated_date(so: RunningSO) -> None:
    async with so.http.delete(f"{so.api}/Person/1/Image") as r:
        assert r.status == 204
    async with so.http.get(f"{so.api}/Person/1/Image") as r:
        assert r.status == 404
    assert await (await so.http.get(f"{so.api}/Person/1/ImageInfo")).read() == b""
    async with so.http.get(f"{so.api}/Person/1") as r:
        assert (await r.json())["UpdatedDate"] == "2024-03-02T08:00:00"


async def test_knob_makes_image_writes_touch_the_updated_date(make_so: SOFactory) -> None:
    so = await make_so(image_updates_touch_updated_date=True)
    async with so.http.put(
        f"{so.api}/Person/2/Image", data=gif_bytes(), headers={"Content-Type": "image/gif"}
    ):
        pass
    async with so.http.get(
        f"{so.api}/Person", params={"$select": "personUpdatedDate", "$filter": "personId eq 2"}
    ) as r:
        assert (await r.json())["value"][0]["personUpdatedDate"] == "2024-05-01T00:00:00"
    so.emulator.clock = lambda: 1_714_600_000.0
    async with so.http.delete(f"{so.api}/Contact/1/Image"):
        pass
    async with so.http.get(f"{so.api}/Contact/1") as r:
        assert (await r.json())["UpdatedDate"] == "2024-05-01T21:46:40"
