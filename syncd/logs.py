"""Logging setup: structlog for syncd's own events, the stdlib root for libraries, and secret redaction.

One pipeline renders everything (syncd's structlog events and the stdlib records of aiohttp, apscheduler,
asyncio): console lines on a TTY, JSON lines otherwise (journald, files, pipes), ISO-8601 UTC timestamps.

Redaction runs on the structured event (event text, every keyword value recursively, the formatted
traceback) and once more on the rendered line, and masks with ``**********``:

* every secret value this process knows (:func:`syncd.secrets.known_secret_values`: config secrets,
  access tokens, tickets), also URL- or JSON-escaped;
* the value of any key that names a credential (``authorization``, ``*_secret``, ``*password``,
  ``*token``, ``*ticket``, ``cookie``, ...);
* credential-shaped text: ``Authorization: <scheme> <credential>``, ``Bearer|SOTicket|Basic <credential>``,
  ``key=value`` and ``"key": "value"`` pairs for credential keys, SuperOffice tickets and tokens
  (``7T:…``, ``8A:…``) and JWTs (``eyJ….….…``).

Uncaught exceptions (``sys.excepthook``, ``threading.excepthook``) are logged through the same pipeline.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from syncd.errors import ConfigError
from syncd.secrets import MASK, Secret, known_secret_values

__all__ = ["MASK", "configure_logging", "redact", "redact_event", "redact_text"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# -- what counts as a credential -------------------------------------------------------------------------

_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "so_apptoken",
        "x_api_key",
        "pwd",
        "private_key",
        "private_key_pem",
        "client_assertion",
        "signature",
    }
)
_SENSITIVE_SUFFIXES = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "ticket",
    "apptoken",
    "api_key",
    "apikey",
    "assertion",
    "private_key",
    "private_key_pem",
    "credential",
    "credentials",
)

_VALUE = r"[^\s\"'\\,;&}\])]+"
_AUTH_SCHEMES = r"(?:Bearer|Basic|SOTicket|Negotiate|NTLM|Digest)"
_CRED_WORDS = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "ticket",
    "assertion",
    "apikey",
    "api_key",
    "api-key",
    "apptoken",
)
_CRED_KEY = r"(?:secret|password|passwd|passphrase|token|ticket|assertion|api[_-]?key|apptoken)"

# (cheap lower-case substring prefilter, pattern). Each pattern keeps group 1 (the label) and masks the
# rest of its match. The prefilters keep redaction at a few microseconds for ordinary lines.
_TEXT_PATTERNS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    # Authorization: Bearer x / "Authorization": "SOTicket 7T:x" / authorization=Basic x
    (
        ("authorization",),
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:" + _AUTH_SCHEMES + r"\s+)?)" + _VALUE
        ),
    ),
    # SO-AppToken: x, X-API-Key: x, Cookie: x (header names that are never prose)
    (
        ("apptoken", "api-key", "cookie"),
        re.compile(r"(?i)(\b(?:so-apptoken|x-api-key|set-cookie|cookie)[\"']?\s*[:=]\s*[\"']?)" + _VALUE),
    ),
    # a bare scheme + credential; the credential must contain a digit or symbol ("Basic authentication"
    # stays readable)
    (
        ("bearer", "basic", "soticket", "negotiate", "ntlm", "digest"),
        re.compile(
            r"(\b" + _AUTH_SCHEMES + r"\s+)(?=[A-Za-z0-9\-._~+/=:]*[0-9\-._~+/=:])[A-Za-z0-9\-._~+/=:]{8,}"
        ),
    ),
    # client_secret=x&..., password = x (form bodies, query strings, assignments)
    (_CRED_WORDS, re.compile(r"(?i)(" + _CRED_KEY + r"\s*=\s*)" + _VALUE)),
    # "access_token": "x", 'password': 'x', ticket: "x" (quoted values only: prose stays readable)
    (_CRED_WORDS, re.compile(r"(?i)(" + _CRED_KEY + r"[\"']?\s*:\s*[\"'])[^\"'\\]+")),
    # SuperOffice tickets and online tokens
    (("7t:", "8a:"), re.compile(r"()(?<![A-Za-z0-9])(?:7T|8A):[A-Za-z0-9+/=._\-]{6,}")),
    # JWT (header.payload.signature; the signature may be empty for alg=none)
    (("eyj",), re.compile(r"()\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")),
)

_known_cache: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ())


def _known_values() -> tuple[str, ...]:
    """Known secret values, longest first (so a value containing another is masked whole)."""
    global _known_cache
    values = known_secret_values()
    cached_values, ordered = _known_cache
    if values is not cached_values:
        ordered = tuple(sorted(values, key=len, reverse=True))
        _known_cache = (values, ordered)
    return ordered


def _is_sensitive_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    k = key.lower().replace("-", "_")
    return k in _SENSITIVE_KEYS or k.endswith(_SENSITIVE_SUFFIXES)


def redact_text(text: str) -> str:
    """*text* with every known secret and credential-shaped substring replaced by ``**********``."""
    # Substring tests, not one big alternation regex: compiling that for a few hundred token-sized
    # values took 0.4 s (on every token refresh) and matching it cost ~150 µs per line.
    for value in _known_values():
        if value in text:
            text = text.replace(value, MASK)
    lower = text.lower()
    for needles, pattern in _TEXT_PATTERNS:
        if any(n in lower for n in needles):
            text = pattern.sub(_keep_label, text)
    return text


def _keep_label(m: re.Match[str]) -> str:
    return m.group(1) + MASK


def redact(value: Any, *, _depth: int = 0) -> Any:
    """A copy of *value* (str, mapping, list, tuple, set, or anything else) with credentials masked.

    Strings go through :func:`redact_text`; the value under a credential-named key is masked whole;
    containers are copied recursively; other objects are returned as they are (the rendered line is
    redacted again, which covers their ``repr``).
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Secret):
        return MASK
    if _depth > 32:
        return value
    if isinstance(value, Mapping):
        return {
            k: (_mask_whole(v) if _is_sensitive_key(k) else redact(v, _depth=_depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact(v, _depth=_depth + 1) for v in value]
        if isinstance(value, set | frozenset):
            return type(value)(items)
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(items)
        return items
    if isinstance(value, bytes | bytearray):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return value
        redacted = redact_text(text)
        return value if redacted == text else redacted.encode("utf-8")
    return value


def _mask_whole(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    return MASK


def redact_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask credentials in the event text, every value and the formatted traceback."""
    return {
        key: (_mask_whole(val) if _is_sensitive_key(key) else redact(val)) for key, val in event_dict.items()
    }


def _format_exception(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Turn ``exc_info`` into a plain ``exception`` text (no frame locals) so that redaction can see it."""
    exc_info = event_dict.pop("exc_info", None)
    info = _exc_info_tuple(exc_info)
    if info is not None:
        event_dict["exception"] = "".join(traceback.format_exception(*info)).rstrip("\n")
    return event_dict


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exc_info_tuple(exc_info: Any) -> ExcInfo | None:
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        return (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[0] is not None:
        return (exc_info[0], exc_info[1], exc_info[2])
    current = sys.exc_info()
    if current[0] is None or current[1] is None:
        return None
    return (current[0], current[1], current[2])


class _RedactedRenderer:
    """Wraps the final renderer and redacts the rendered line once more (covers reprs of odd objects)."""

    def __init__(self, renderer: Callable[[WrappedLogger, str, EventDict], str | bytes]) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        out = self._renderer(logger, method_name, event_dict)
        text = out.decode("utf-8", "replace") if isinstance(out, bytes) else out
        return redact_text(text)


class _SyncdHandler(logging.StreamHandler[TextIO]):
    """The root handler installed by :func:`configure_logging` (recognized and replaced on reconfigure)."""


class _StderrHandler(_SyncdHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record, not the object it was at set-up
    (test runners and some hosts swap it; a handler holding the old one writes to a closed file)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


_original_excepthook = sys.excepthook
_original_threading_excepthook = threading.excepthook


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        _original_excepthook(exc_type, exc, tb)
        return
    try:
        logging.getLogger("syncd").critical("uncaught exception", exc_info=(exc_type, exc, tb))
    except Exception:
        sys.stderr.write(redact_text("".join(traceback.format_exception(exc_type, exc, tb))))


def _threading_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("syncd").critical(
        "uncaught exception in thread %s",
        thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _want_json(json: bool | None, stream: TextIO) -> bool:
    if json is not None:
        return json
    isatty = getattr(stream, "isatty", None)
    try:
        return not (callable(isatty) and isatty())
    except ValueError:  # closed stream
        return True


def configure_logging(*, json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger; call once at start-up (again to change level).

    *json*: ``True`` for JSON lines, ``False`` for console lines, ``None`` to choose by whether *stream*
    (default ``sys.stderr``) is a TTY. *level*: debug, info, warning, error or critical. Replaces the root
    logger's handlers with one redacting handler and installs redacting ``sys.excepthook`` and
    ``threading.excepthook``.
    """
    levelno = _LEVELS.get(level.strip().lower())
    if levelno is None:
        raise ConfigError(
            f"log level {level!r} is not one of debug, info, warning, error, critical",
        )
    out = stream if stream is not None else sys.stderr
    as_json = _want_json(json, out)

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    renderer: Callable[[WrappedLogger, str, EventDict], str | bytes]
    if as_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        colors = "NO_COLOR" not in os.environ and not _want_json(None, out)
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _format_exception,
            redact_event,
            _RedactedRenderer(renderer),
        ],
    )
    handler: _SyncdHandler = _SyncdHandler(out) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
        structlog.processors.StackInfoRenderer(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]
    structlog.configure(
        processors=shared,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        cache_logger_on_first_use=False,
    )
    sys.excepthook = _excepthook
    threading.excepthook = _threading_excepthook
