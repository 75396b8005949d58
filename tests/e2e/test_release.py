"""A release: the wheel and the sdist carry what a service install needs, and the wheel works on its own.

Builds both with ``python -m build`` (the wheel from the sdist, so a file missing from the sdist breaks
the wheel too), checks what they contain, installs the wheel into a fresh venv in a temporary
directory outside the checkout and runs ``syncd --version`` and ``syncd demo`` there.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# What a service install needs, as paths inside the wheel's data directory (installed under <prefix>/).
SHARED = [
    "share/syncd/config/example.yaml",
    "share/syncd/config/sandbox.yaml",
    "share/syncd/systemd/syncd.service",
    "share/syncd/systemd/syncd-once.service",
    "share/syncd/systemd/syncd-once.timer",
    "share/syncd/systemd/syncd@.service",
    "share/syncd/systemd/README.md",
    "share/syncd/contrib/prometheus/syncd-rules.yml",
    "share/syncd/contrib/prometheus/syncd-rules_test.yml",
    "share/syncd/contrib/grafana/syncd.json",
    "share/syncd/contrib/README.md",
    "share/doc/syncd/CHANGELOG.md",
]
PACKAGE = [
    "syncd/py.typed",
    "syncd/cli.py",
    "syncd/sandbox/__init__.py",
    "syncd/sandbox/server.py",
    "syncd/sandbox/businesscentral/__init__.py",
    "syncd/sandbox/superoffice/__init__.py",
    "syncd/sandbox/entra.py",
    "syncd/sandbox/data.py",
    "syncd/sandbox/pictures.py",
]


async def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = await asyncio.create_subprocess_exec(
        *(str(a) for a in argv),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{text[-4000:]}"
    return text


def _clean_env(tmp: Path) -> dict[str, str]:
    """No trace of the checkout or the test venv: a user's shell in an empty directory."""
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
    keep |= {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONFIG_FILE"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if str(ROOT) not in p)
    env["COLUMNS"] = "100"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


async def test_wheel_and_sdist_carry_a_service_install_and_the_wheel_runs_outside_the_checkout(
    tmp_path: Path,
) -> None:
    dist = tmp_path / "dist"
    await _run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp_path)
    wheels = list(dist.glob("syncd-*.whl"))
    sdists = list(dist.glob("syncd-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    wheel, sdist = wheels[0], sdists[0]
    assert wheel.name.startswith(f"syncd-{VERSION}-") and sdist.name == f"syncd-{VERSION}.tar.gz"

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"syncd-{VERSION}.dist-info/METADATA").decode()
    data = f"syncd-{VERSION}.data/data/"
    missing = [n for n in PACKAGE if n not in names] + [n for n in SHARED if data + n not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert f"\nVersion: {VERSION}\n" in metadata
    assert not any(n.startswith(("tests/", "bench/")) for n in names), "tests do not belong in the wheel"

    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    wanted = [
        "pyproject.toml",
        "CHANGELOG.md",
        "README.md",
        "syncd/py.typed",
        "syncd/sandbox/businesscentral/__init__.py",
        "config/example.yaml",
        "systemd/syncd.service",
        "contrib/prometheus/syncd-rules.yml",
        "contrib/prometheus/syncd-rules_test.yml",
        "contrib/grafana/syncd.json",
        "tests/e2e/test_release.py",
    ]
    lacking = [n for n in wanted if n not in members]
    assert not lacking, f"the sdist lacks {lacking}"

    # A fresh venv in a directory that has nothing to do with the checkout.
    home = tmp_path / "elsewhere"
    home.mkdir()
    env = _clean_env(tmp_path)
    venv = home / "venv"
    await _run(sys.executable, "-m", "venv", venv, cwd=home, env=env)
    await _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=home, env=env)

    py = venv / "bin" / "python"
    where = await _run(py, "-c", "import syncd; print(syncd.__file__)", cwd=home, env=env)
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not the checkout
    assert (venv / "share" / "syncd" / "config" / "example.yaml").is_file()
    assert (venv / "share" / "syncd" / "contrib" / "prometheus" / "syncd-rules.yml").is_file()

    version = await _run(venv / "bin" / "syncd", "--version", cwd=home, env=env)
    assert version.strip() == f"syncd {VERSION}", version

    out = await _run(venv / "bin" / "syncd", "demo", cwd=home, env=env)
    first = re.search(r"received (\d+) picture PATCH requests in run 1", out)
    second = re.search(r"received (\d+) picture PATCH requests in run 2", out)
    assert first and int(first.group(1)) > 0, out[-4000:]
    assert second and int(second.group(1)) == 0, out[-4000:]
    assert (home / "demo" / "syncd.yaml").is_file()


def test_version_has_one_source() -> None:
    """`syncd --version`, the User-Agent and the build-info metric all say pyproject.toml's version."""
    import syncd
    from syncd.http import USER_AGENT

    assert syncd.__version__ == VERSION
    assert f"syncd/{VERSION} " in USER_AGENT
    init = (ROOT / "syncd" / "__init__.py").read_text()
    literal = re.search(r"__version__\s*=\s*['\"]\d+\.\d+", init)
    assert not literal, "the version is written in pyproject.toml only"
