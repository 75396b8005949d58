"""The storages syncd moves pictures between, as Protocols (vdirsyncer's ``storage/base.py`` idea).

:class:`Source` names what the engine, the fingerprint passes, ``syncd check`` and the daemon ask of the
picture source (SuperOffice); :class:`Target` what they ask of the picture target (Business Central).
The clients conform: the assignments at the end are checked by mypy, so a verb renamed on one side
fails the type check instead of a run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, runtime_checkable

from syncd.businesscentral import BusinessCentralClient
from syncd.superoffice import Links, NoPicture, SuperOfficeClient
from syncd.types import SourceKind, SourceRow, TargetKind, TargetPicture, TargetRow


@runtime_checkable
class Source(Protocol):
    """Where pictures come from: records with a picture each, read only."""

    async def probe(self, kind: SourceKind) -> None:
        """Reachable, signed in, allowed to read ``kind``; raises the client's error otherwise."""
        ...

    def list(
        self, kind: SourceKind, columns: Sequence[str], *, on_bad: Callable[[str], None] | None = None
    ) -> AsyncIterator[SourceRow]:
        """Every record of ``kind`` with these columns, in id order."""
        ...

    def picture_links(self, kind: SourceKind) -> AsyncIterator[Links]:
        """Every picture link of ``kind``, a page at a time (the bulk fingerprint pass)."""
        ...

    async def fingerprint(self, kind: SourceKind, entity_id: int) -> str | None:
        """The stored picture's identity without its bytes; None when there is none."""
        ...

    async def image_blob_id(self, kind: SourceKind, entity_id: int) -> int | None:
        """The stored picture's blob id; None when there is none."""
        ...

    async def image(self, kind: SourceKind, entity_id: int) -> bytes | NoPicture:
        """The stored picture's bytes, or how sure the service is that there is none."""
        ...


@runtime_checkable
class Target(Protocol):
    """Where pictures go: one company's records, each with at most one picture."""

    company_id: str | None
    company_name: str | None

    async def probe(self) -> str:
        """Reachable, signed in, the company exists: its id; raises the client's error otherwise."""
        ...

    async def resolve_company(self) -> str:
        """The company's id (asked once, then remembered)."""
        ...

    def list(
        self, kind: TargetKind, fields: Sequence[str], *, on_bad: Callable[[str], None] | None = None
    ) -> AsyncIterator[TargetRow]:
        """Every record of ``kind`` with its picture."""
        ...

    async def get_picture(self, kind: TargetKind, record_id: str) -> TargetPicture:
        """One record's picture (fresh etag)."""
        ...

    async def picture_content(self, kind: TargetKind, record_id: str, picture: TargetPicture) -> bytes:
        """The stored picture's bytes."""
        ...

    async def put_picture(
        self, kind: TargetKind, record_id: str, picture: TargetPicture | None, data: bytes, *, if_match: str
    ) -> str | None:
        """Write the picture; the new etag when the reply tells it."""
        ...

    async def delete_picture(self, kind: TargetKind, record_id: str, *, if_match: str | None) -> None:
        """Clear the picture."""
        ...


# The clients conform (checked by mypy --strict; a unit test checks it at run time too).
_SOURCE: type[Source] = SuperOfficeClient
_TARGET: type[Target] = BusinessCentralClient
