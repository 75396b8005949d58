"""The sandbox as a separate process for the benchmarks, so it never competes with syncd for the GIL.

    python -m bench.sandbox_proc --contacts N --pictures small|cpumix [--rate-limit COUNT SECONDS]
                                 [--so-rate-limit COUNT SECONDS]

Builds a clean dataset (unlike ``syncd sandbox``'s seeded one, which mixes in broken, blank, unmatched
and 12 MP pictures): N SuperOffice contacts, each with a picture from the chosen pool, and N Business
Central customers matching them by ``code`` ↔ ``number``, none with a picture yet. Every picture is a
first sync, so the first run writes exactly N pictures.

Prints one JSON line when listening (``{"so_url", "bc_url", "config"}``) and serves until SIGTERM,
SIGINT or end of stdin.

Two benchmark-only changes to the emulator, both inside this process: uploaded pictures are interned
by content (20,000 uploads of pool-derived pictures would otherwise keep 20,000 copies), and the
uploads' inspection is cached for the same reason. Neither changes what syncd sees on the wire.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bench.inputs import cpu_mix_pool, small_pool, tiny_pool
from syncd.sandbox.businesscentral import state as bc_module
from syncd.sandbox.data import COMPANY_NAME, DATA_EPOCH
from syncd.sandbox.server import Sandbox

POOLS: dict[str, Callable[[], list[bytes]]] = {"small": small_pool, "cpumix": cpu_mix_pool, "tiny": tiny_pool}
MIME = {b"\xff\xd8": "image/jpeg", b"\x89P": "image/png", b"GI": "image/gif"}


def _intern_uploads() -> None:
    original = bc_module.inspect_picture
    cache: dict[bytes, bc_module.BCPicture] = {}

    def inspect(data: bytes) -> bc_module.BCPicture:
        key = hashlib.sha256(data).digest()
        found = cache.get(key)
        if found is None:
            found = cache[key] = original(data)
        return found

    bc_module.inspect_picture = inspect


def build(args: argparse.Namespace) -> Sandbox:
    options: dict[str, Any] = {"max_concurrent": args.max_concurrent or None}
    if args.rate_limit:
        options["rate_limit"] = (int(args.rate_limit[0]), float(args.rate_limit[1]))
    if args.so_rate_limit:
        options["request_limit"] = (int(args.so_rate_limit[0]), float(args.so_rate_limit[1]))
    sb = Sandbox(seed=1, contacts=0, persons=0, **options)
    so, bc = sb.dataset.so, sb.dataset.bc
    company = bc.company_by_name(COMPANY_NAME)
    assert company is not None
    pool = POOLS[args.pictures]()
    when = DATA_EPOCH - timedelta(days=10)
    for i in range(1, args.contacts + 1):
        key = f"C{i:06d}"
        updated = when - timedelta(days=i % 365)  # spread, so updatedDate watermarks mean something
        so.add_contact(contact_id=i, name=f"Bench {i}", code=key, registeredDate=updated, updatedDate=updated)
        data = pool[i % len(pool)]
        so.set_image("contact", i, data, MIME.get(data[:2], "image/jpeg"), when=updated)
        bc.add_record(company.id, "customers", number=key, display_name=f"Bench {i}")
    so.checkpoint()  # what `POST /_sandbox/reset?data=true` returns to (BC checkpoints when it starts)
    return sb


async def serve(args: argparse.Namespace) -> None:
    _intern_uploads()
    sb = build(args)
    await sb.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stdin = sys.stdin.fileno()
    loop.add_reader(stdin, lambda: None if os.read(stdin, 1) else stop.set())  # parent gone: stop
    ready: dict[str, Any] = {
        "so_url": sb.so_url,
        "bc_url": sb.bc_url,
        "bc_origin": sb.bc_origin,
        "so_origin": sb.so_origin,
    }
    ready["config"] = sb.config(ledger="ledger.sqlite")
    print(json.dumps(ready), flush=True)
    try:
        await stop.wait()
    finally:
        await sb.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sandbox_proc")
    p.add_argument("--contacts", type=int, required=True)
    p.add_argument("--pictures", choices=sorted(POOLS), default="small")
    p.add_argument("--rate-limit", nargs=2, metavar=("COUNT", "SECONDS"), help="Business Central's limit")
    p.add_argument("--so-rate-limit", nargs=2, metavar=("COUNT", "SECONDS"), help="SuperOffice's limit")
    p.add_argument("--max-concurrent", type=int, default=5, help="BC concurrent requests (0 = unlimited)")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
