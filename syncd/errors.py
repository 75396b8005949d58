"""Exceptions a user can cause or meet, each carrying the process exit code it maps to.

Exit codes (documented in the README, a public contract):
    0 ok (including nothing to do)
    1 usage or configuration error
    2 partial: some items failed, the rest synced
    3 retryable: an API unreachable or throttled past the retry budget
    4 safety stop: the run would have done something dangerous; nothing was changed
    5 authentication failure
    6 another syncd holds the lock for this mapping
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CONFIG = 1
    PARTIAL = 2
    RETRYABLE = 3
    SAFETY_STOP = 4
    AUTH = 5
    LOCKED = 6


class SyncdError(Exception):
    """Base class. ``hint`` tells the user what to do about it."""

    exit_code: ExitCode = ExitCode.RETRYABLE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(SyncdError):
    exit_code = ExitCode.CONFIG


class AuthError(SyncdError):
    exit_code = ExitCode.AUTH


class UnreachableError(SyncdError):
    """Network failure, DNS failure, or retry budget exhausted on 5xx/429."""

    exit_code = ExitCode.RETRYABLE


class ApiError(SyncdError):
    """An API answered with an error that retrying will not fix (4xx other than 401/408/429)."""

    exit_code = ExitCode.RETRYABLE

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class ForeignOriginError(ApiError):
    """A reply pointed at another origin (scheme, host, port) than the configured base_url: syncd sends
    no request there (credentials and pictures go only to the configured origin)."""

    exit_code = ExitCode.CONFIG


class MalformedReplyError(ApiError, ValueError):
    """A reply that is not what the API documents (not JSON, nested too deeply, wrong types).

    Also a ``ValueError``, so callers that treated undecodable JSON as "no information" keep doing so."""


class PermissionDeniedError(ApiError):
    exit_code = ExitCode.AUTH


class NotFoundError(ApiError):
    pass


class PreconditionFailedError(ApiError):
    """BC 409 ``Request_EntityChanged`` or 412: the etag we sent is stale."""


class SafetyStop(SyncdError):
    exit_code = ExitCode.SAFETY_STOP


class LockedError(SyncdError):
    exit_code = ExitCode.LOCKED


class ImageError(SyncdError):
    """A source picture that cannot be turned into a usable target picture. Fails one item only."""

    exit_code = ExitCode.PARTIAL
