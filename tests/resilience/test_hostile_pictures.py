"""Hostile and awkward pictures: each one normalizes correctly or fails with a clear ImageError.

The whole corpus (tests/support/pictures_corpus.py) runs through ``normalize`` in a child process, so that a
regression cannot hang or exhaust the test runner: the child has a time limit and an address-space
cap, and reports its own peak RSS (VmHWM; ``RUSAGE_CHILDREN``'s ru_maxrss would include the pytest
process's RSS at spawn time, which Linux carries over into the child). A decompression bomb that really
decoded 30000×30000 RGBA would need ~3.6 GB, the 8000×8000 one ~0.5 GB; the bound is far under that
and far over what a correct normalizer needs (~45 MB, imports included).
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.pictures_corpus import HostileCase, hostile_cases, hostile_corpus, jpeg_markers

PEAK_RSS_LIMIT_MB = 400
ADDRESS_SPACE_CAP = 2 << 30  # the child dies with MemoryError instead of taking the machine down
TIME_LIMIT_S = 120

CASES: dict[str, HostileCase] = {case.name: case for case in hostile_cases()}

# Runs in the child: normalize every input, report outcome, output and peak RSS after each.
_RUNNER = """
import json, pickle, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from syncd.errors import ImageError
from syncd.imaging import PictureProfile, normalize

with open(sys.argv[1], "rb") as f:
    corpus = pickle.load(f)
def peak_rss_kb():
    # VmHWM is this process's own high-water mark since exec. ru_maxrss is not: Linux carries the
    # parent's RSS at fork/exec time over into the child's ru_maxrss (and so into RUSAGE_CHILDREN).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

profile = PictureProfile()
baseline = peak_rss_kb()
results = {{}}
for name, data in corpus:
    print("start", name, file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        out = normalize(data, profile)
        r = {{"outcome": "ok", "data": out.data.hex(), "width": out.width, "height": out.height,
             "content_type": out.content_type, "source_format": out.source_format}}
    except ImageError as exc:
        r = {{"outcome": "error", "message": str(exc)}}
    except BaseException as exc:
        r = {{"outcome": "crash", "message": f"{{type(exc).__name__}}: {{exc}}"}}
    r["seconds"] = time.perf_counter() - started
    r["peak_rss_kb"] = peak_rss_kb()
    results[name] = r
json.dump({{"baseline_rss_kb": baseline, "results": results}}, sys.stdout)
"""


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Normalize the whole corpus in a child process; its results, plus peak RSS from both sides."""
    corpus_file = Path(tmp_path_factory.mktemp("hostile")) / "corpus.pickle"
    corpus_file.write_bytes(pickle.dumps([(name, data) for name, data, _ in hostile_corpus()]))
    code = _RUNNER.format(cap=ADDRESS_SPACE_CAP)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(corpus_file)],
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
        started = [line for line in stderr.splitlines() if line.startswith("start ")]
        pytest.fail(f"normalizer hung (> {TIME_LIMIT_S}s), last input: {started[-1:] or 'none'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def test_corpus_is_large_and_names_are_unique() -> None:
    corpus = hostile_corpus()
    names = [name for name, _, _ in corpus]
    assert len(names) >= 25 and len(set(names)) == len(names)
    assert {expect for _, _, expect in corpus} == {"ok", "error"}
    assert all(isinstance(data, bytes) for _, data, _ in corpus)
    assert hostile_corpus() == corpus  # deterministic and safe to mutate the returned list


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_normalized_or_cleanly_rejected(name: str, corpus_run: dict[str, Any]) -> None:
    case = CASES[name]
    result = corpus_run["results"][name]
    assert result["outcome"] != "crash", f"escaped as another exception type: {result['message']}"
    if case.expect == "error":
        assert result["outcome"] == "error", (
            f"expected an ImageError, got a {result.get('width')}×{result.get('height')}"
        )
        message: str = result["message"]
        assert case.message.lower() in message.lower(), message
        assert "Traceback" not in message and "<" not in message[:1] and len(message) < 300, message
        return
    assert result["outcome"] == "ok", result.get("message")
    data = bytes.fromhex(result["data"])
    assert result["content_type"] == "image/jpeg"
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "JPEG" and im.mode == "RGB"
    assert im.size == (result["width"], result["height"])
    assert 1 <= im.width <= 500 and 1 <= im.height <= 500
    assert not im.getexif()
    assert not [m for m, _ in jpeg_markers(data) if 0xE1 <= m <= 0xEF or m == 0xFE], "metadata segments"


def test_corpus_peak_memory_is_bounded(corpus_run: dict[str, Any]) -> None:
    results = corpus_run["results"]
    peak_kb = max(r["peak_rss_kb"] for r in results.values())
    # The first input that pushed the peak up to its final value is the one to look at on failure.
    culprit = next(name for name, r in results.items() if r["peak_rss_kb"] == peak_kb)
    assert peak_kb < PEAK_RSS_LIMIT_MB * 1024, f"peak RSS {peak_kb // 1024} MB, reached at {culprit}"


def test_rejected_bombs_never_decode(corpus_run: dict[str, Any]) -> None:
    """Bombs are refused from the header: they cost no memory beyond the bytes themselves."""
    results = corpus_run["results"]
    names = list(results)
    for name in ("png_zip_bomb_30000x30000_rgba", "png_zip_bomb_8000x8000_rgba_full_idat"):
        before = results[names[names.index(name) - 1]]["peak_rss_kb"]
        assert results[name]["peak_rss_kb"] - before < 20 * 1024, name
