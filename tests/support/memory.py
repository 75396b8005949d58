"""In-memory SuperOffice (source) and Business Central (target) for fast engine tests.

They implement exactly the client methods the engine calls (vdirsyncer's memory storage idea), so
``tests/unit/test_engine_memory.py`` runs the real :class:`syncd.engine.Engine` with a real ledger, no
HTTP and no subprocess. Pictures are real (small PNGs), so the real normalizer runs too.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from syncd.config import Config, load_config
from syncd.errors import NotFoundError, PreconditionFailedError
from syncd.superoffice import NoPicture
from syncd.types import SourceKind, SourceRow, TargetKind, TargetPicture, TargetRow


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    """A small real picture."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def number(i: int) -> str:
    return f"C{i:05d}"


def target_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


class MemorySource:
    """SuperOffice as the engine sees it: contacts with a ``code`` column and a picture each (or none).

    ``image_info``: False makes ImageInfo answer 404 (no such route), so phase A decides by download.
    ``blank``: what ``…/Image`` answers for a record without a picture (204 or 404).
    """

    def __init__(self, pictures: dict[int, bytes | None]) -> None:
        self.pictures = dict(pictures)
        self.image_info = True
        self.blank = NoPicture.CONFIRMED
        self.downloads: list[int] = []
        self.fingerprint_calls = 0

    async def list(
        self, kind: SourceKind, columns: Sequence[str], *, on_bad: Callable[[str], None] | None = None
    ) -> AsyncIterator[SourceRow]:
        for i in sorted(self.pictures):
            yield SourceRow(kind=kind, id=i, columns={"code": number(i)}, updated="2024-12-01T00:00:00")

    async def fingerprint(self, kind: SourceKind, entity_id: int) -> str | None:
        self.fingerprint_calls += 1
        if not self.image_info:
            raise NotFoundError(f"{kind} {entity_id} ImageInfo: no such route", status=404)
        data = self.pictures.get(entity_id)
        return None if data is None else hashlib.sha256(data).hexdigest()[:16]

    async def image(self, kind: SourceKind, entity_id: int) -> bytes | NoPicture:
        self.downloads.append(entity_id)
        data = self.pictures.get(entity_id)
        return self.blank if data is None else data


@dataclass
class MemoryRecord:
    number: str
    picture: bytes = b""
    etag_seq: int = 1
    size: tuple[int, int] = (0, 0)

    @property
    def etag(self) -> str:
        return f'W/"picture-{self.etag_seq}"'

    def put(self, data: bytes) -> None:
        self.picture = data
        self.size = Image.open(io.BytesIO(data)).size if data else (0, 0)
        self.etag_seq += 1

    def as_picture(self) -> TargetPicture:
        present = bool(self.picture)
        return TargetPicture(
            etag=self.etag,
            width=self.size[0],
            height=self.size[1],
            content_type="image/jpeg" if present else "",
            edit_link=None,
        )


@dataclass
class MemoryTarget:
    """Business Central as the engine sees it: records with a picture and its etag; ``If-Match`` is
    checked as BC does (a stale etag: 409). ``before_write`` runs before each PATCH's etag check (to
    let "someone else" change the picture meanwhile); ``tell_etag``: whether a write's reply carries
    the new etag."""

    records: dict[str, MemoryRecord] = field(default_factory=dict)
    tell_etag: bool = True
    before_write: Callable[[str], None] | None = None
    writes: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    company_id: str | None = "memory-company"
    company_name: str | None = "Memory Ltd"

    @classmethod
    def with_records(cls, ids: Sequence[int]) -> MemoryTarget:
        return cls(records={target_id(i): MemoryRecord(number(i)) for i in ids})

    async def list(
        self, kind: TargetKind, fields: Sequence[str], *, on_bad: Callable[[str], None] | None = None
    ) -> AsyncIterator[TargetRow]:
        for rid, rec in self.records.items():
            yield TargetRow(
                kind=kind, id=rid, number=rec.number, display_name="", fields={}, picture=rec.as_picture()
            )

    async def get_picture(self, kind: TargetKind, record_id: str) -> TargetPicture:
        return self.records[record_id].as_picture()

    async def picture_content(self, kind: TargetKind, record_id: str, picture: TargetPicture) -> bytes:
        return self.records[record_id].picture

    async def put_picture(
        self, kind: TargetKind, record_id: str, picture: TargetPicture | None, data: bytes, *, if_match: str
    ) -> str | None:
        if self.before_write is not None:
            self.before_write(record_id)
        rec = self.records[record_id]
        if if_match != rec.etag:
            raise PreconditionFailedError(f"{kind} {record_id}: Request_EntityChanged", status=409)
        rec.put(data)
        self.writes.append(record_id)
        return rec.etag if self.tell_etag else None

    async def delete_picture(self, kind: TargetKind, record_id: str, *, if_match: str | None) -> None:
        rec = self.records[record_id]
        if if_match is not None and if_match != rec.etag:
            raise PreconditionFailedError(f"{kind} {record_id}: Request_EntityChanged", status=409)
        rec.put(b"")
        self.deletes.append(record_id)


def memory_config(directory: Path, **mapping: Any) -> Config:
    """A configuration for one ``customers`` mapping (contacts by ``code`` = BC ``number``), ImageInfo
    per record, no clear caps in the way; ``mapping`` overrides the mapping's settings."""
    cfg = {
        "superoffice": {
            "base_url": "http://127.0.0.1:9/Cust1/api/v1",
            "auth": {"type": "basic", "username": "u", "password": "p"},
            "change_detection": "per_record",
        },
        "businesscentral": {
            "base_url": "http://127.0.0.1:9/v2.0/t/production/api/v2.0",
            "company": "CRONUS",
            "auth": {"type": "basic", "username": "u", "password": "p"},
        },
        "limits": {"max_clears": 1000, "max_clears_percent": 100},
        "ledger": str(directory / "ledger.sqlite"),
        "mappings": [
            {
                "name": "customers",
                "source": "contact",
                "target": "customers",
                "match": {"source": "code", "target": "number"},
                **mapping,
            }
        ],
    }
    path = directory / "syncd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return load_config(path)
