"""``syncd check``'s findings and the helpers both sides use to word them (HTTP status, error detail,
unreachable hosts), and the short, retry-free limits every check request runs with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from syncd.config import ApiLimits
from syncd.errors import ExitCode, UnreachableError
from syncd.http import (
    Response,
    error_detail,
)
from syncd.jobs import SEVERITY

CHECK_TIMEOUT = 15.0  # seconds per request at most (the config may allow longer for real runs)
CHECK_CONNECT_TIMEOUT = 10.0

_PERMISSION_WORDS = ("permission", "not authorized", "unauthorized to", "forbidden")


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: a check that passed, or one that failed with a hint and an exit code."""

    ok: bool
    text: str
    hint: str | None = None
    code: ExitCode = ExitCode.OK


@dataclass(slots=True)
class Section:
    """The findings for one side (SuperOffice, Business Central, ledger), in the order they were made."""

    title: str
    findings: list[Finding]

    @property
    def code(self) -> ExitCode:
        return worst(f.code for f in self.findings)


class Failed(Exception):
    """Ends one side's checks with a failing finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.text)
        self.finding = finding


def fail(text: str, hint: str | None, code: ExitCode) -> Failed:
    return Failed(Finding(False, text, hint, code))


def worst(codes: Any) -> ExitCode:
    found = set(codes)
    return next((c for c in SEVERITY if c in found), ExitCode.OK)


def quick_limits(limits: ApiLimits) -> ApiLimits:
    """No retries and short timeouts: a check answers in seconds instead of backing off for minutes."""
    return limits.model_copy(
        update={
            "max_retries": 0,
            "timeout": min(limits.timeout, CHECK_TIMEOUT),
            "connect_timeout": min(limits.connect_timeout, CHECK_CONNECT_TIMEOUT),
            "max_retry_wait": 0.0,
        }
    )


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


def unreachable(what: str, exc: UnreachableError, hint: str) -> Failed:
    text = re.sub(r"; \d+ attempts?\)", ")", exc.message.removeprefix(what + ": "))
    return fail(f"{what}: {text}", hint, ExitCode.RETRYABLE)


def reason_of(message: str) -> str:
    """``… (connection refused; 3 attempts)`` → ``connection refused``."""
    m = re.search(r"\(([^()]*)\)\s*$", message)
    return re.sub(r"; \d+ attempts?$", "", m.group(1)) if m else message


def detail_of(resp: Response) -> tuple[str | None, str]:
    """(error code, first line of the message without BC's CorrelationId) of an error response."""
    code, message = error_detail(resp.body)
    first = message.strip().splitlines()[0] if message.strip() else ""
    first = re.sub(r"\s*CorrelationId:\s*[0-9a-fA-F-]+\.?\s*$", "", first).strip()
    return code, first


def status_text(resp: Response) -> str:
    code, message = detail_of(resp)
    return f"HTTP {resp.status}" + (f" {code}" if code else "") + (f": {message}" if message else "")


def www_authenticate_description(resp: Response) -> str | None:
    header = resp.headers.get("WWW-Authenticate", "")
    m = re.search(r'error_description="([^"]*)"', header)
    return m.group(1) if m else None


def is_permission_problem(resp: Response) -> bool:
    if resp.status == 403:
        return True
    _, message = detail_of(resp)
    return resp.status == 400 and any(w in message.lower() for w in _PERMISSION_WORDS)
