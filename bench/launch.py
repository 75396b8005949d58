"""Run a command from a small process and record its own CPU time and peak RSS.

    python -m bench.launch RESULT.json -- COMMAND...

Why a launcher: Linux carries a process's peak RSS across ``exec`` (``ru_maxrss`` is the larger of the
old and the new image's high-water mark), so a child forked from the benchmark process — hundreds of MB
after the normalizer measure — would report at least that. Forked from this process, which imports
next to nothing, the floor is a few MB. Exits with the command's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    out, sep, *argv = sys.argv[1:]
    if sep != "--" or not argv:
        print("usage: python -m bench.launch RESULT.json -- COMMAND...", file=sys.stderr)
        return 2
    started = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump(
            {
                "code": proc.returncode,
                "wall": time.perf_counter() - started,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "max_rss_mb": usage.ru_maxrss / 1024,
                "launcher_max_rss_mb": __import__("resource").getrusage(0).ru_maxrss / 1024,
            },
            f,
        )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
