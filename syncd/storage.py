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

    @property
    def company_id(self) -> str | None:
        """The company's id once resolved."""
        ...

    @property
    def company_name(self) -> str | None:
        """The company's name once resolved."""
        ...

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


class DryRunWriteError(AssertionError):
    """A dry run reached a write: a bug in syncd, refused before anything was sent."""


class ReadOnlyTarget:
    """A :class:`Target` for ``--dry-run``: reads go to the real target, a write raises
    :class:`DryRunWriteError` instead of reaching Business Central. The run stops before its writes and
    lists them in its plan; this makes "a dry run changes nothing" a property of the target, not of every
    branch that might write."""

    def __init__(self, target: Target) -> None:
        self._target = target

    @property
    def company_id(self) -> str | None:
        return self._target.company_id

    @property
    def company_name(self) -> str | None:
        return self._target.company_name

    async def probe(self) -> str:
        return await self._target.probe()

    async def resolve_company(self) -> str:
        return await self._target.resolve_company()

    def list(
        self, kind: TargetKind, fields: Sequence[str], *, on_bad: Callable[[str], None] | None = None
    ) -> AsyncIterator[TargetRow]:
        return self._target.list(kind, fields, on_bad=on_bad)

    async def get_picture(self, kind: TargetKind, record_id: str) -> TargetPicture:
        return await self._target.get_picture(kind, record_id)

    async def picture_content(self, kind: TargetKind, record_id: str, picture: TargetPicture) -> bytes:
        return await self._target.picture_content(kind, record_id, picture)

    async def put_picture(
        self, kind: TargetKind, record_id: str, picture: TargetPicture | None, data: bytes, *, if_match: str
    ) -> str | None:
        raise DryRunWriteError(f"a dry run tried to write the picture of {kind} {record_id}")

    async def delete_picture(self, kind: TargetKind, record_id: str, *, if_match: str | None) -> None:
        raise DryRunWriteError(f"a dry run tried to clear the picture of {kind} {record_id}")


# The clients conform (checked by mypy --strict; a unit test checks it at run time too).
_SOURCE: type[Source] = SuperOfficeClient
_TARGET: type[Target] = BusinessCentralClient
_READ_ONLY: type[Target] = ReadOnlyTarget
