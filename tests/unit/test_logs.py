"""Log output: JSON or console, ISO UTC timestamps, and no secret ever reaches it."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from syncd.errors import ConfigError
from syncd.logs import MASK, configure_logging, redact, redact_text
from syncd.secrets import Secret, resolve_secret

SECRET = "Zq8~client+secret/val=ue"  # has characters that URL-encoding changes


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON logging into a buffer; restores logging, structlog and the excepthooks afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.excepthook, threading.excepthook)
    buf = io.StringIO()
    configure_logging(json=True, level="debug", stream=buf)
    try:
        yield buf
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        sys.excepthook, threading.excepthook = saved[2], saved[3]
        structlog.reset_defaults()


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_known_secret_in_event_text_is_masked(captured: io.StringIO) -> None:
    Secret(SECRET)
    structlog.get_logger().info(f"posting form client_id=abc&secret_value={SECRET}")
    out = captured.getvalue()
    assert SECRET not in out
    assert MASK in lines(captured)[0]["event"]


def test_url_encoded_secret_is_masked(captured: io.StringIO) -> None:
    resolve_secret("${S}", config_path=None, env={"S": SECRET})
    structlog.get_logger().info("body", body="grant_type=client_credentials&x=Zq8~client%2Bsecret%2Fval%3Due")
    assert "Zq8~client%2Bsecret" not in captured.getvalue()


def test_credential_keys_are_masked_recursively(captured: io.StringIO) -> None:
    structlog.get_logger().info(
        "request",
        headers={"Authorization": "Bearer opaque-thing", "Accept": "application/json"},
        nested=[{"password": "hunter22"}, ("x", {"client_secret": "abcdefgh"})],
        access_token="tok-tok-tok",
        token_url="https://login.example/token",
        expires_in=3599,
    )
    (line,) = lines(captured)
    assert line["headers"] == {"Authorization": MASK, "Accept": "application/json"}
    assert line["nested"] == [{"password": MASK}, ["x", {"client_secret": MASK}]]
    assert line["access_token"] == MASK
    assert line["token_url"] == "https://login.example/token"  # not a credential
    assert line["expires_in"] == 3599
    for leaked in ("opaque-thing", "hunter22", "abcdefgh", "tok-tok-tok"):
        assert leaked not in captured.getvalue()


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("sent Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("header authorization=SOTicket 7T:MAA3xyz==", "MAA3xyz"),
        ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        ("retrying with Bearer 8A:Cust12345.AGYAabc", "AGYAabc"),
        ("ticket 7T:MAA3QkFCREVGR0g= expired", "MAA3QkFCREVGR0g"),
        ("got eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl back", "c2lnbmF0dXJl"),
        ('{"access_token": "opaque-value-1", "expires_in": 3599}', "opaque-value-1"),
        ("client_secret=opaque-value-2&scope=x", "opaque-value-2"),
        ("password = opaque-value-3", "opaque-value-3"),
        ("SO-AppToken: opaque-value-4", "opaque-value-4"),
    ],
)
def test_credential_shaped_text_is_masked(captured: io.StringIO, text: str, leak: str) -> None:
    structlog.get_logger().warning(text)
    assert leak not in captured.getvalue()
    assert MASK in lines(captured)[0]["event"]


def test_ordinary_prose_stays_readable() -> None:
    for text in (
        "businesscentral.auth.client_secret: environment variable BC_SECRET is not set",
        "Basic authentication is not allowed online",
        "refreshing token for client 1234… at tenant contoso",
        "token_url=https://login.microsoftonline.com/t/oauth2/v2.0/token",
    ):
        assert redact_text(text) == text


def test_exception_traceback_is_masked(captured: io.StringIO) -> None:
    Secret(SECRET)

    def fail(client_secret: str) -> None:
        raise RuntimeError(f"token request failed for {client_secret} with Bearer eyJabcde.eyJfghij.sig")

    try:
        fail(SECRET)
    except RuntimeError:
        structlog.get_logger().exception("auth failed")
    (line,) = lines(captured)
    assert "Traceback (most recent call last)" in line["exception"]
    assert "RuntimeError" in line["exception"]
    assert SECRET not in captured.getvalue()
    assert "eyJfghij" not in captured.getvalue()


def test_stdlib_logging_from_libraries_is_masked(captured: io.StringIO) -> None:
    Secret(SECRET)
    logging.getLogger("aiohttp.client").warning("request headers %s", {"Authorization": f"Bearer {SECRET}"})
    try:
        raise ValueError(SECRET)
    except ValueError:
        logging.getLogger("apscheduler.executors").exception("job raised")
    out = captured.getvalue()
    assert SECRET not in out
    records = lines(captured)
    assert records[0]["logger"] == "aiohttp.client"
    assert records[1]["level"] == "error" and "ValueError" in records[1]["exception"]


def test_uncaught_exception_goes_through_redaction(captured: io.StringIO) -> None:
    Secret(SECRET)
    try:
        raise KeyError(f"client_secret {SECRET}")
    except KeyError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = lines(captured)
    assert line["level"] == "critical" and "KeyError" in line["exception"]
    assert SECRET not in captured.getvalue()


def test_uncaught_exception_in_thread_goes_through_redaction(captured: io.StringIO) -> None:
    Secret(SECRET)

    def boom() -> None:
        raise RuntimeError(SECRET)

    t = threading.Thread(target=boom, name="worker-1")
    t.start()
    t.join()
    (line,) = lines(captured)
    assert "worker-1" in line["event"]
    assert SECRET not in captured.getvalue()


def test_secret_objects_render_masked(captured: io.StringIO) -> None:
    structlog.get_logger().info("config", password_ref=Secret(SECRET), other=[Secret(SECRET)])
    assert SECRET not in captured.getvalue()


def test_console_output_is_masked_too() -> None:
    Secret(SECRET)
    buf = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers), root.level, sys.excepthook, threading.excepthook
    try:
        configure_logging(json=False, stream=buf)
        log = structlog.get_logger("syncd.test")
        log.info("hello", password="pw-pw-pw-pw", url="https://x")
        try:
            raise RuntimeError(SECRET)
        except RuntimeError:
            log.exception("boom")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        sys.excepthook, threading.excepthook = saved[2], saved[3]
        structlog.reset_defaults()
    out = buf.getvalue()
    assert "hello" in out and "url=https://x" in out
    assert "pw-pw-pw-pw" not in out and SECRET not in out
    assert "\x1b[" not in out  # no colours when the stream is not a terminal
    assert not out.lstrip().startswith("{")


def test_json_lines_carry_iso_utc_timestamp_and_level(captured: io.StringIO) -> None:
    structlog.get_logger("syncd.engine").info("run finished", written=3)
    (line,) = lines(captured)
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]
    assert line["level"] == "info"
    assert line["logger"] == "syncd.engine"
    assert line["written"] == 3


def test_auto_mode_writes_json_when_stream_is_not_a_tty(captured: io.StringIO) -> None:
    buf = io.StringIO()
    configure_logging(stream=buf)
    structlog.get_logger().info("x")
    assert json.loads(buf.getvalue())["event"] == "x"


def test_level_filters_structlog_and_stdlib(captured: io.StringIO) -> None:
    buf = io.StringIO()
    configure_logging(json=True, level="warning", stream=buf)
    structlog.get_logger().info("quiet")
    logging.getLogger("aiohttp.access").info("quiet too")
    structlog.get_logger().warning("loud")
    assert [line["event"] for line in lines(buf)] == ["loud"]


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="verbose"):
        configure_logging(level="verbose", stream=io.StringIO())


def test_redact_copies_containers_and_leaves_other_values() -> None:
    original = {"headers": {"Authorization": "Bearer zzzzzzzz"}, "n": 1, "ok": True}
    out = redact(original)
    assert out == {"headers": {"Authorization": MASK}, "n": 1, "ok": True}
    assert original["headers"]["Authorization"] == "Bearer zzzzzzzz"


def test_default_output_follows_the_current_stderr(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging(json=True)
    replacement = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replacement)  # e.g. a test runner or host swapping stderr later
    structlog.get_logger().info("after swap", password="pw-pw-pw-pw")
    line = json.loads(replacement.getvalue())
    assert line["event"] == "after swap" and line["password"] == MASK
