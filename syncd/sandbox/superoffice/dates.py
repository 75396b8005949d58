"""SuperOffice emulator, dates as SuperOffice stores, shows and filters them (UTC, whole seconds)."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime, timedelta


# -- dates ---------------------------------------------------------------------------------------
def utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC datetime truncated to whole seconds (what SuperOffice stores and shows)."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=0)


def so_date(dt: datetime | None) -> str:
    """SuperOffice's date display: ISO 8601 without an offset, in UTC (``2015-11-04T15:58:39``)."""
    # Callers hold whole-second UTC datetimes; isoformat is ~30x faster than strftime (listings use it a lot).
    return "" if dt is None else dt.isoformat()[:19]


_DATE_RE = re.compile(
    r"(\d{4})[-.](\d{1,2})[-.](\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?"
)


def parse_so_datetime(text: str) -> datetime:
    """Parse the date forms SuperOffice filters accept (``'2021-1-1'``, ``'2020-05-28T15:00:01'``, …).

    Values without an offset are UTC; values with one are converted. Raises ValueError.
    """
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a date: {text!r}")
    year, month, day, hour, minute, second, _frac, tz = m.groups()
    dt = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        dt = dt - sign * offset
    return dt.replace(tzinfo=UTC)


def http_date(dt: datetime) -> str:
    return email.utils.format_datetime(dt, usegmt=True)
