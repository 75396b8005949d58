"""What the measures share: sizes per mode, the sandbox and syncd subprocesses, the request log.

Processes: the benchmark process only orchestrates. The sandbox runs in its own process
(``bench.sandbox_proc``) and syncd in another (``bench.syncd_child``, or the plain ``python -m syncd``
CLI for the memory measure), so neither competes with the other for a GIL, and each one's CPU time and
peak RSS are its own (``os.wait4`` for syncd, ``/proc/PID/stat`` for the sandbox).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Mode:
    """How big each measure is. ``full`` is what BENCHMARKS.md reports; ``smoke`` keeps the code alive."""

    name: str
    throughput_pictures: int  # measure 1/2
    window_seconds: float  # measure 1: the BC sliding window (20 requests/s kept)
    normalizer_rounds: int  # measure 3: timed repetitions per input and method
    parallel_pictures: int  # measure 4
    parallel_rounds: int  # measure 4: runs of each setting (alternating); the best counts
    memory_sizes: tuple[int, int]  # measure 5
    ledger_rows: int  # measure 6
    so_pictures: int = 5000  # measure 8: first sync, resync and changes under SuperOffice's 10/s
    so_big: int = 100_000  # measure 8: the large tenant's unchanged resync

    @property
    def window_allowance(self) -> int:
        return round(BC_RATE * self.window_seconds)


BC_RATE = 20.0  # Business Central: 6,000 requests per 5 minutes per principal = 20 per second

FULL = Mode("full", 5000, 30.0, 7, 150, 2, (1000, 20000), 100_000)
SMOKE = Mode("smoke", 100, 2.0, 1, 10, 1, (50, 300), 2_000, so_pictures=20, so_big=60)


# -- processes -----------------------------------------------------------------------------------------


@dataclass
class ProcessResult:
    code: int
    stdout: str
    stderr: str
    wall: float
    cpu_seconds: float
    max_rss_mb: float


def run_process(
    argv: Sequence[str], *, cwd: Path | None = None, cpus: set[int] | None = None, timeout: float = 3600
) -> ProcessResult:
    """Run to completion through ``bench.launch``: CPU time and peak RSS of that process alone."""
    with tempfile.TemporaryDirectory() as tmp:
        usage_file = Path(tmp) / "usage.json"
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
        launch = [sys.executable, "-m", "bench.launch", str(usage_file), "--", *argv]
        started = time.perf_counter()
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(launch, cwd=cwd, stdout=fo, stderr=fe, env=env)
            if cpus:
                os.sched_setaffinity(proc.pid, cpus)  # inherited by the command
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        wall = time.perf_counter() - started
        usage = json.loads(usage_file.read_text()) if usage_file.exists() else {}
        return ProcessResult(
            code=int(usage["code"]) if "code" in usage else -1,
            stdout=out.read_text(errors="replace"),
            stderr=err.read_text(errors="replace"),
            wall=wall,
            cpu_seconds=float(usage.get("cpu_seconds", 0.0)),
            max_rss_mb=float(usage.get("max_rss_mb", 0.0)),
        )


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class SandboxProcess:
    """``bench.sandbox_proc`` in a child process; admin API helpers."""

    def __init__(
        self,
        contacts: int,
        pictures: str = "small",
        *,
        rate_limit: tuple[int, float] | None = None,
        so_rate_limit: tuple[int, float] | None = None,
        max_concurrent: int = 5,
        cpus: set[int] | None = None,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "bench.sandbox_proc",
            "--contacts",
            str(contacts),
            "--pictures",
            pictures,
        ]
        argv += ["--max-concurrent", str(max_concurrent)]
        if rate_limit:
            argv += ["--rate-limit", str(rate_limit[0]), str(rate_limit[1])]
        if so_rate_limit:
            argv += ["--so-rate-limit", str(so_rate_limit[0]), str(so_rate_limit[1])]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        if cpus:
            os.sched_setaffinity(self.proc.pid, cpus)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"sandbox did not start: {err[-2000:]}")
        self.info: dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    @property
    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def _admin(
        self, origin: str, path: str, method: str = "GET", body: Any = None, raw: bytes | None = None
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else raw
        req = urllib.request.Request(origin + path, data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read() or b"null")

    def reset(self, *, data: bool = False) -> None:
        """Clear both request logs; with ``data`` also restore the seeded data (BC pictures empty again)."""
        query = "?data=true" if data else ""
        for origin in (self.info["so_origin"], self.info["bc_origin"]):
            self._admin(origin, "/_sandbox/reset" + query, "POST")

    def bc_requests(self) -> list[dict[str, Any]]:
        return list(self._admin(self.info["bc_origin"], "/_sandbox/requests"))

    def so_stats(self) -> dict[str, Any]:
        return dict(self._admin(self.info["so_origin"], "/_sandbox/stats"))

    def bc_limits(self) -> dict[str, Any]:
        return dict(self._admin(self.info["bc_origin"], "/_sandbox/bc/limits"))

    def set_bc_limits(self, **knobs: Any) -> None:
        self._admin(self.info["bc_origin"], "/_sandbox/bc/limits", "PUT", knobs)

    def so_requests(self) -> list[dict[str, Any]]:
        return list(self._admin(self.info["so_origin"], "/_sandbox/requests"))

    def set_so_options(self, **knobs: Any) -> None:
        self._admin(self.info["so_origin"], "/_sandbox/so/options", "PUT", knobs)

    def set_so_picture(self, contact_id: int, data: bytes | None) -> None:
        """Change (or with None remove) a contact's picture in SuperOffice, as a user would."""
        path = f"/_sandbox/so/contact/{contact_id}/image"
        if data is None:
            self._admin(self.info["so_origin"], path, "DELETE")
        else:
            self._admin(self.info["so_origin"], path, "PUT", raw=data)


@contextmanager
def sandbox(contacts: int, pictures: str = "small", **options: Any) -> Iterator[SandboxProcess]:
    sb = SandboxProcess(contacts, pictures, **options)
    try:
        yield sb
    finally:
        sb.stop()


def merge(into: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
    return into


def write_config(sb: SandboxProcess, directory: Path, **overrides: Any) -> Path:
    """The sandbox's syncd config, one mapping (contacts → customers), ``overrides`` merged in."""
    cfg = json.loads(json.dumps(sb.info["config"]))
    cfg["ledger"] = str(directory / "ledger.sqlite")
    cfg["mappings"] = [m for m in cfg["mappings"] if m["name"] == "customers"]
    cfg["server"] = {"enabled": False}
    merge(cfg, overrides)
    path = directory / "syncd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


def run_child(
    config: Path, directory: Path, *, tag: str, cpus: set[int] | None = None, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """``bench.syncd_child`` on ``config`` (``extra``: more arguments, e.g. ``--full``); its JSON result
    plus the process's wall/CPU/RSS."""
    out = directory / f"child-{tag}.json"
    argv = [sys.executable, "-m", "bench.syncd_child", "-c", str(config), "--out", str(out), *extra]
    res = run_process(argv, cpus=cpus)
    if res.code != 0 or not out.exists():
        raise RuntimeError(f"syncd child failed ({res.code}): {res.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.read_text())
    data["process"] = {"wall": res.wall, "cpu_seconds": res.cpu_seconds, "max_rss_mb": res.max_rss_mb}
    data["stderr_tail"] = res.stderr[-2000:]
    return data


# -- request log ---------------------------------------------------------------------------------------


def classify(entry: Mapping[str, Any]) -> str:
    """token | companies | list | patch | get_picture | get_content | delete | other (a BC log entry)."""
    route, method = str(entry["route"]), str(entry["method"])
    if "oauth2" in route:
        return "token"
    if route.endswith("/companies"):
        return "companies"
    if route.endswith("/{stream}"):
        return {"PATCH": "patch", "GET": "get_content"}.get(method, "other")
    if route.endswith(("/picture", "/picture({picture_id})")):
        return {"GET": "get_picture", "DELETE": "delete"}.get(method, "other")
    if method == "GET" and route.endswith("/{entity_set}"):
        return "list"
    return "other"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[k])


# -- environment ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import aiohttp
    import PIL

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "pillow": PIL.__version__,
        "aiohttp": aiohttp.__version__,
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        import pyvips  # type: ignore[import-untyped]

        info["pyvips"] = pyvips.__version__
        info["libvips"] = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    except Exception as exc:
        info["pyvips"] = f"unavailable: {exc}"
    try:
        from PIL import features

        info["libjpeg"] = features.version("jpg")
        info["zlib"] = features.version("zlib")
    except Exception:
        pass
    with suppress(OSError):
        info["syncd_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
