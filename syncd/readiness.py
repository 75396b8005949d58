"""The daemon's startup and reload probe: prove, before ``READY=1``, that both APIs accept the credentials
and answer — the BC companies every enabled mapping names (and no two mappings owning one record), and one
SuperOffice row — through the clients' own probe verbs. ``syncd check`` asks the same clients in more
detail (:mod:`syncd.check`).
"""

from __future__ import annotations

import asyncio

from syncd.errors import UnreachableError
from syncd.runtime import Runtime
from syncd.targets import check_owners

__all__ = ["PROBE_TIMEOUT", "probe"]

PROBE_TIMEOUT = 60.0  # seconds for the startup/reload probe; systemd's TimeoutStartSec= is 90 s


async def probe(rt: Runtime) -> None:
    """Authenticate and read a little on both sides: the BC company and one SuperOffice row.

    Raises the client's :class:`SyncdError` (``AuthError``, ``UnreachableError``, ``ConfigError`` for
    an unknown company, ...) or :class:`UnreachableError` after :data:`PROBE_TIMEOUT` seconds.
    """
    cfg = rt.config
    kind = next((m.source for m in cfg.mappings if m.enabled), cfg.mappings[0].source)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            # every company found (one GET /companies for all), and no two mappings owning one record
            enabled = [m for m in cfg.mappings if m.enabled]
            await check_owners(rt, enabled)
            if not enabled:  # still prove that Business Central accepts the credentials
                await rt.target.probe()
            await rt.source.probe(kind)
    except TimeoutError:
        raise UnreachableError(
            f"the APIs did not answer within {PROBE_TIMEOUT:g}s",
            hint="check the base URLs and the network; `syncd check` tells which side",
        ) from None
