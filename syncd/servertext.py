"""Text that came from a server (error messages, names, ids): data — never markup, control codes or a secret.

An API's error text ends up in the ledger, ``syncd status``, ``/status.json``, the status page, ``syncd
ledger export`` and the terminal report. A server may echo the credential it was sent, or send text that
a terminal or Rich would act on (``[/b]`` crashed the report; ``[link=…]`` became a hyperlink; ESC
sequences can rewrite the screen). So:

* :func:`clean` — secrets redacted (:func:`syncd.logs.redact_text`: known config secrets and runtime
  tokens, ``Bearer``/``Basic``/``SOTicket`` credentials, tickets, JWTs, ``password=…``) and control
  characters (C0, DEL, C1, bidi overrides and zero-width characters) replaced: for storing and showing.
* :func:`for_terminal` — :func:`clean`, then Rich markup escaped: for a ``console.print`` with markup.
"""

from __future__ import annotations

import re

from rich.markup import escape

from syncd.logs import redact_text

__all__ = ["clean", "clean_optional", "for_terminal"]

# C0 controls (tab, newline and carriage return become a space), DEL, C1 controls, zero-width and
# bidirectional formatting characters (which make text display as something else than it is).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SPACE = frozenset("\t\n\r\x0b\x0c")


def _replace(m: re.Match[str]) -> str:
    return " " if m.group() in _SPACE else ""


def clean(text: str) -> str:
    """``text`` with secrets masked and control characters gone."""
    return _CONTROL.sub(_replace, redact_text(text))


def clean_optional(text: str | None) -> str | None:
    return None if text is None else clean(text)


def for_terminal(text: object) -> str:
    """``text`` cleaned and with Rich markup escaped, to embed in a string printed with markup on."""
    return escape(clean(str(text)))
