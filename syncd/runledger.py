"""The ledger as one run uses it, and the ledger a ``--dry-run`` uses: it reads, and records nothing.

:class:`RunLedger` names the ledger methods a run calls (:class:`syncd.ledger.Ledger` has them all).
:class:`DryRunLedger` answers every read from the real ledger and drops every write, so the run's steps
record the same way in both modes and a dry run leaves the ledger as it found it (no run row either:
:meth:`DryRunLedger.start_run` gives no run id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from syncd.ledger import Issue, ItemRow, Ledger, LedgerItem


class RunLedger(Protocol):
    """What a run reads from and records in the ledger."""

    @property
    def clock(self) -> Callable[[], datetime]: ...

    async def start_run(self, mapping: str, mode: str) -> int | None: ...
    async def finish_run(
        self, run_id: int, counts: Mapping[str, int], outcome: str, error: str | None = None
    ) -> None: ...
    async def set_change_detection(self, run_id: int, strategy: str, note: str | None) -> None: ...
    async def bulk_verified(self, mapping: str) -> bool: ...
    async def count_items(self, mapping: str | None = None) -> int: ...
    async def get_items(
        self, mapping: str, source_kind: str, source_ids: Iterable[int]
    ) -> dict[int, LedgerItem]: ...
    async def record(self, item: LedgerItem) -> None: ...
    async def record_rows(self, rows: Sequence[ItemRow]) -> None: ...
    async def set_checked(
        self, mapping: str, source_kind: str, source_ids: Sequence[int], when: str
    ) -> None: ...
    async def get_watermark(self, mapping: str, source_kind: str) -> str | None: ...
    async def set_watermark(self, mapping: str, source_kind: str, value: str) -> None: ...
    async def replace_issues(self, run_id: int, mapping: str, issues: Sequence[Issue]) -> None: ...
    async def add_recent_change(
        self,
        mapping: str,
        source_kind: str,
        source_id: int,
        target_id: str | None,
        *,
        source_thumb: bytes | None,
        output_thumb: bytes | None,
    ) -> None: ...


class DryRunLedger:
    """``ledger`` read-only: reads go through, writes are dropped, a run gets no id."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._ledger.clock

    # -- reads: the real ledger's answers
    async def bulk_verified(self, mapping: str) -> bool:
        return await self._ledger.bulk_verified(mapping)

    async def count_items(self, mapping: str | None = None) -> int:
        return await self._ledger.count_items(mapping)

    async def get_items(
        self, mapping: str, source_kind: str, source_ids: Iterable[int]
    ) -> dict[int, LedgerItem]:
        return await self._ledger.get_items(mapping, source_kind, source_ids)

    async def get_watermark(self, mapping: str, source_kind: str) -> str | None:
        return await self._ledger.get_watermark(mapping, source_kind)

    # -- writes: dropped
    async def start_run(self, mapping: str, mode: str) -> int | None:
        return None

    async def finish_run(
        self, run_id: int, counts: Mapping[str, int], outcome: str, error: str | None = None
    ) -> None:
        pass

    async def set_change_detection(self, run_id: int, strategy: str, note: str | None) -> None:
        pass

    async def record(self, item: LedgerItem) -> None:
        pass

    async def record_rows(self, rows: Sequence[ItemRow]) -> None:
        pass

    async def set_checked(self, mapping: str, source_kind: str, source_ids: Sequence[int], when: str) -> None:
        pass

    async def set_watermark(self, mapping: str, source_kind: str, value: str) -> None:
        pass

    async def replace_issues(self, run_id: int, mapping: str, issues: Sequence[Issue]) -> None:
        pass

    async def add_recent_change(
        self,
        mapping: str,
        source_kind: str,
        source_id: int,
        target_id: str | None,
        *,
        source_thumb: bytes | None,
        output_thumb: bytes | None,
    ) -> None:
        pass
