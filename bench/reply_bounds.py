"""Replies are bounded after decompression (issue #13, point 4): what it costs and what it saves.

Run: ``.venv/bin/python -m bench.reply_bounds`` (standalone; not part of ``make bench``). From a loopback
aiohttp server it reads

1. a gzip bomb (40 MB of JSON, ~39 KB on the wire): peak traced Python memory of aiohttp's own
   decompression + ``read()`` (how syncd read every reply before) vs :func:`syncd.http.read_body` with the
   default 1 MB cap;
2. a 4.8 MB BC-like listing page (gzip on the wire, as BC online sends it), 30 times: median time of
   both readers (read_body inflates with zlib itself, asking for at most the bytes still allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import statistics
import time
import tracemalloc

import aiohttp
from aiohttp import web

from syncd.http import ReplyTooLarge, new_session, read_body

BOMB = gzip.compress(b"{" + b" " * 40_000_000 + b"}", compresslevel=9)
ROWS = [
    {
        "id": f"00000000-0000-0000-0000-{i:012d}",
        "number": f"C{i:05d}",
        "displayName": f"Customer {i}",
        "picture": {
            "@odata.etag": 'W/"JzQ0O0VnQUFBQUo3LzBNQUFEQUFBQUFBQUFBQUFB"',
            "width": 500,
            "height": 500,
        },
    }
    for i in range(20_000)
]
PAGE = gzip.compress(json.dumps({"value": ROWS}).encode(), 6)


async def _serve() -> tuple[web.AppRunner, str]:
    async def bomb(request: web.Request) -> web.Response:
        return web.Response(
            body=BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            body=PAGE, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    app = web.Application()
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/page", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def main() -> None:
    runner, origin = await _serve()
    try:
        async with aiohttp.ClientSession(auto_decompress=True) as plain, new_session() as bounded:
            tracemalloc.start()
            async with plain.get(origin + "/bomb") as r:
                await r.read()
            _, peak_plain = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            tracemalloc.start()
            async with bounded.get(origin + "/bomb") as r:
                with contextlib.suppress(ReplyTooLarge):
                    await read_body(r, 1_000_000)
            _, peak_bounded = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"gzip bomb ({len(BOMB):,} bytes on the wire, 40 MB inflated): peak traced memory "
                f"aiohttp read() {peak_plain / 1e6:.1f} MB, read_body(1 MB cap) {peak_bounded / 1e6:.2f} MB"
            )
            times: dict[str, list[float]] = {"plain": [], "bounded": []}
            for _ in range(30):
                t = time.perf_counter()
                async with plain.get(origin + "/page") as r:
                    a = await r.read()
                times["plain"].append(time.perf_counter() - t)
                t = time.perf_counter()
                async with bounded.get(origin + "/page") as r:
                    b = await read_body(r, 20_000_000)
                times["bounded"].append(time.perf_counter() - t)
                assert a == b
            mp, mb = statistics.median(times["plain"]), statistics.median(times["bounded"])
            print(
                f"listing page ({len(a) / 1e6:.1f} MB, {len(PAGE) / 1e3:.0f} KB gzip) x30, median: "
                f"aiohttp read() {mp * 1e3:.1f} ms, read_body {mb * 1e3:.1f} ms (ratio {mb / mp:.2f})"
            )
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
