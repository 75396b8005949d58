"""The time stamps the run writes into ledger rows: the ledger's injected clock, to the second.

Phase A stamps 100,000s of rows (``checked_at``), so :class:`SecondStamps` formats the ISO 8601 text once
per second of the clock, not once per row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


class SecondStamps:
    """``clock()`` as ISO 8601 UTC text to the second ("2026-01-02T03:04:05+00:00"), cached per second."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        second = int(self.clock().timestamp())
        if second != self._second:
            self._second = second
            self._text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
        return self._text
