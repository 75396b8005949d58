"""The shipped systemd units: they load cleanly, stay locked down, and agree with syncd's contracts.

``systemd-analyze`` runs offline on the unit files; nothing here needs a running systemd. Two tests
replay, in a subprocess, restrictions that the units impose, to show syncd's libraries live with them.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from syncd.errors import ExitCode
from syncd.secrets import resolve_secret

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
README = UNITS / "README.md"
SERVICES = ["syncd.service", "syncd-once.service", "syncd@.service"]
MAX_EXPOSURE = 1.5
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

Directive = tuple[str, str, str]  # (section, key, value)


def directives(name: str) -> list[Directive]:
    """The unit's settings in file order, comments and blank lines dropped."""
    out: list[Directive] = []
    section = ""
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def values(name: str, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in directives(name) if s == section and k == key]


def sandbox(name: str) -> list[tuple[str, str]]:
    """The settings under the unit's "--- Sandbox" banner, in order."""
    text = (UNITS / name).read_text()
    block = text[text.index("# --- Sandbox") :]
    block = block.split("\n[", 1)[0]
    return [
        (k, v)
        for k, _, v in (line.partition("=") for line in block.splitlines())
        if k and not k.startswith("#")
    ]


def instance_copy(name: str, directory: Path, executable: str | None = None) -> Path:
    """A copy of a unit under a loadable name (``syncd@.service`` → ``syncd@tenant1.service``),
    optionally with ExecStart= pointing at an executable that exists on this machine."""
    target = directory / name.replace("@.", "@tenant1.")
    text = (UNITS / name).read_text()
    if executable is not None:
        text = text.replace("/usr/local/bin/syncd ", f"{executable} ")
    target.write_text(text)
    return target


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


def exposure(unit: Path) -> float:
    result = run_analyze("security", "--offline=true", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert m, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    return float(m.group(1))


def syncd_executable() -> str:
    """The installed entry point, so `verify` checks the command the units really run."""
    script = Path(sys.executable).with_name("syncd")
    return str(script) if os.access(script, os.X_OK) else "/bin/true"


# --- systemd-analyze ---------------------------------------------------------------------------


@needs_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_service_exposure_is_at_most_1_5(name: str, tmp_path: Path) -> None:
    level = exposure(instance_copy(name, tmp_path))
    assert level <= MAX_EXPOSURE, f"{name}: exposure {level}, allowed {MAX_EXPOSURE}"


@needs_analyze
@pytest.mark.parametrize("name", [*SERVICES, "syncd-once.timer"])
def test_unit_verifies_without_a_single_message(name: str, tmp_path: Path) -> None:
    # verify exits 0 even for unknown keys and unparsable values, warning on stderr: demand silence.
    # ExecStart= points at the venv's syncd because verify insists that the binary exists.
    paths = [instance_copy(name, tmp_path, syncd_executable())]
    if name.endswith(".timer"):
        paths.append(instance_copy("syncd-once.service", tmp_path, syncd_executable()))
    result = run_analyze("verify", *map(str, paths))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_verify_would_catch_a_misspelt_hardening_line(tmp_path: Path) -> None:
    # The guard above is only worth something if a typo makes noise.
    unit = instance_copy("syncd.service", tmp_path, syncd_executable())
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = run_analyze("verify", str(unit))
    assert "ProtectSytem" in result.stderr


# --- agreement with syncd's own contracts ------------------------------------------------------


@pytest.mark.parametrize("name", ["syncd-once.service", "syncd@.service"])
def test_every_service_has_the_same_sandbox_as_syncd_service(name: str) -> None:
    assert sandbox(name) == sandbox("syncd.service")


@pytest.mark.parametrize("name", ["syncd.service", "syncd@.service"])
def test_daemon_is_not_restarted_for_failures_a_restart_cannot_fix(name: str) -> None:
    (prevent,) = values(name, "RestartPreventExitStatus")
    codes = {int(c) for c in prevent.split()}
    assert {ExitCode.CONFIG, ExitCode.SAFETY_STOP, ExitCode.AUTH} <= codes
    assert 243 in codes  # systemd's EXIT_CREDENTIALS: a credential file is missing
    assert not codes & {ExitCode.RETRYABLE, ExitCode.LOCKED, ExitCode.PARTIAL}
    assert values(name, "Restart") == ["on-failure"]


def test_timer_run_counts_only_a_clean_exit_as_success() -> None:
    assert values("syncd-once.service", "Type") == ["oneshot"]
    assert values("syncd-once.service", "SuccessExitStatus") == []
    assert values("syncd-once.timer", "Unit", "Timer") == ["syncd-once.service"]
    assert values("syncd-once.timer", "Persistent", "Timer") == ["true"]


@pytest.mark.parametrize("name", ["syncd.service", "syncd@.service"])
def test_daemon_units_use_the_notify_protocol_with_a_watchdog(name: str) -> None:
    assert values(name, "Type") == ["notify"]
    assert values(name, "NotifyAccess") == ["main"]
    assert values(name, "WatchdogSec") == ["60"]


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_waits_longer_than_syncd_takes_to_shut_down(name: str) -> None:
    from syncd.config import Config

    default_shutdown = float(Config.model_fields["shutdown_timeout"].default)
    (stop,) = values(name, "TimeoutStopSec")
    assert float(stop) > default_shutdown


@pytest.mark.parametrize("name", SERVICES)
def test_loaded_credentials_resolve_as_credential_references(name: str, tmp_path: Path) -> None:
    # What systemd does at start: each LoadCredential=ID:PATH becomes $CREDENTIALS_DIRECTORY/ID ...
    loaded = [v.split(":", 1) for v in values(name, "LoadCredential")]
    assert {cred_id for cred_id, _ in loaded} >= {"bc-client-secret", "so-private-key"}
    for cred_id, _ in loaded:
        (tmp_path / cred_id).write_text(f"value of {cred_id}\n")
    # ... and the config's `credential:ID` reads it back.
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    for cred_id, source in loaded:
        secret = resolve_secret(f"credential:{cred_id}", config_path=None, env=env, key=cred_id)
        assert secret.reveal() == f"value of {cred_id}"
        assert Path(source).name == cred_id  # file name = credential name, as the README says
        assert Path(source).parent.name == "credentials"


def test_ledger_lives_in_the_state_directory_the_readme_documents() -> None:
    readme = README.read_text()
    for name, state_dir, ledger in [
        ("syncd.service", "syncd", "/var/lib/syncd/ledger.sqlite"),
        ("syncd-once.service", "syncd", "/var/lib/syncd/ledger.sqlite"),
        ("syncd@.service", "syncd/%i", "/var/lib/syncd/%i/ledger.sqlite"),
    ]:
        assert values(name, "StateDirectory") == [state_dir]
        assert "/var/lib/" + state_dir + "/ledger.sqlite" == ledger
        assert ledger.replace("%i", "acme") in (UNITS / name).read_text().replace("%i", "acme")
        assert ledger.replace("%i", "TENANT") in readme
    assert values("syncd@.service", "ConfigurationDirectory") == ["syncd/%i"]
    assert "/etc/syncd/TENANT/config.yaml" in readme


@pytest.mark.parametrize("name", SERVICES)
def test_units_run_the_documented_entry_point(name: str) -> None:
    (start,) = values(name, "ExecStart")
    assert start.startswith("/usr/local/bin/syncd run ")
    assert start.endswith("-c ${CONFIGURATION_DIRECTORY}/config.yaml")
    assert ("--once" in start) == (name == "syncd-once.service")
    assert "/usr/local/bin/syncd" in README.read_text()


# --- the sandbox's restrictions, replayed on syncd's libraries ---------------------------------


def run_restricted(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def test_syncd_libraries_need_no_writable_executable_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes: imaging, TLS, crypto and SQLite under the kernel's W^X rule."""
    result = run_restricted(
        f"""
        import ctypes, mmap, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
            sys.exit(77)
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            sys.exit("W+X mapping was allowed: the restriction is not in force")
        except OSError:
            pass
        import asyncio, datetime, io, ssl, sqlite3
        import aiohttp, aiosqlite
        from aiohttp import web
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        from cryptography.x509.oid import NameOID
        from PIL import Image, ImageOps

        rsa.generate_private_key(public_exponent=65537, key_size=2048).sign(
            b"system user token", padding.PKCS1v15(), hashes.SHA256())
        for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF"):
            buf = io.BytesIO(); Image.new("RGB", (640, 480), (200, 10, 10)).save(buf, fmt)
            im = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))).convert("RGB")
            im.thumbnail((300, 300)); im.save(io.BytesIO(), "JPEG", quality=85)

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                .sign(key, hashes.SHA256()))
        d = {str(tmp_path)!r}
        open(d + "/c.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
        open(d + "/k.pem", "wb").write(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

        async def main():
            app = web.Application()
            async def hello(request): return web.Response(text="ok")
            app.router.add_get("/", hello)
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(d + "/c.pem", d + "/k.pem")
            runner = web.AppRunner(app); await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx); await site.start()
            port = runner.addresses[0][1]
            client_ctx = ssl.create_default_context(cafile=d + "/c.pem")
            url = f"https://localhost:{{port}}/"
            async with aiohttp.ClientSession() as s, s.get(url, ssl=client_ctx) as r:
                assert (r.status, await r.text()) == (200, "ok")
            async with aiosqlite.connect(d + "/ledger.sqlite") as db:
                await db.execute("PRAGMA journal_mode=WAL"); await db.execute("CREATE TABLE t(x)")
                await db.commit()
            await runner.cleanup()
        asyncio.run(main())
        print("ok")
        """
    )
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


@pytest.mark.skipif(ctypes.util.find_library("seccomp") is None, reason="libseccomp is not installed")
def test_name_resolution_and_http_work_without_netlink_sockets() -> None:
    """RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6: no AF_NETLINK, which getaddrinfo may try."""
    result = run_restricted(
        """
        import asyncio, ctypes, ctypes.util, errno, socket, sys
        lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
        class Cmp(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
        lib.seccomp_init.restype = ctypes.c_void_p
        ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint32(0x7FFF0000)))  # SCMP_ACT_ALLOW
        deny = ctypes.c_uint32(0x00050000 | errno.EAFNOSUPPORT)  # SCMP_ACT_ERRNO, as systemd does
        nr = lib.seccomp_syscall_resolve_name(b"socket")
        for family in (socket.AF_NETLINK, socket.AF_PACKET):
            rule = (Cmp * 1)(Cmp(0, 4, family, 0))  # argument 0 == family (SCMP_CMP_EQ)
            assert lib.seccomp_rule_add_array(ctx, deny, nr, 1, rule) == 0
        assert lib.seccomp_load(ctx) == 0
        try:
            socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
            sys.exit("netlink socket was allowed: the restriction is not in force")
        except OSError:
            pass
        assert socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)

        import aiohttp
        from aiohttp import web
        async def main():
            app = web.Application()
            async def hello(request): return web.Response(text="ok")
            app.router.add_get("/", hello)
            runner = web.AppRunner(app); await runner.setup()
            site = web.TCPSite(runner, "localhost", 0); await site.start()
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as s, s.get(f"http://localhost:{port}/") as r:
                assert r.status == 200
            await runner.cleanup()
        asyncio.run(main())
        print("ok")
        """
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def _bytes(value: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


@pytest.mark.parametrize("name", SERVICES)
def test_memory_and_tasks_are_capped_above_what_syncd_budgets_itself(name: str) -> None:
    from syncd.config import Limits, PictureConfig

    (high,) = values(name, "MemoryHigh")
    (hard,) = values(name, "MemoryMax")
    (tasks,) = values(name, "TasksMax")
    # a run's own ~80 MB (BENCHMARKS.md, measure 5) plus every decode in flight together (measure 7)
    needed = 80_000_000 + PictureConfig().max_decode_memory
    assert needed < _bytes(high) < _bytes(hard), (name, high, hard)
    workers = Limits.model_fields["cpu_workers"].metadata
    most_workers = max(m.le for m in workers if hasattr(m, "le"))
    assert int(tasks) >= most_workers + 32 + 8  # normalizers, Python's default pool, loop and SQLite
