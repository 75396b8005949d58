"""Command line: argument parsing, exit codes, progress on a TTY. Nothing else.

    syncd run [--once] [--dry-run] [--full] [--mapping NAME] [--force] [-c FILE]
    syncd check [-c FILE]
    syncd status [-c FILE] [--json]
    syncd ledger reset|export [-c FILE] [--mapping NAME]
    syncd sandbox [--host H] [--so-port P] [--bc-port P] [--seed N] [--contacts N] [--persons N]
                  [--write-config PATH]
    syncd demo

Exit codes: see :mod:`syncd.errors` and the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack, nullcontext

import structlog
from rich.console import Console

from syncd import __version__
from syncd.config import Config, literal_secret_warning, load_config
from syncd.errors import ConfigError, ExitCode, SyncdError
from syncd.jobs import job_exit_code, run_job
from syncd.logs import configure_logging
from syncd.report import ProgressReporter, outcomes_json, print_plan, print_status, print_summary
from syncd.run import RunOptions
from syncd.runtime import open_runtime
from syncd.servertext import for_terminal
from syncd.status import status_data

DEFAULT_CONFIG = "syncd.yaml"
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE: not one of ours, so systemd restarts and timers retry
log = structlog.get_logger("syncd.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncd",
        description="Mirror SuperOffice contact and person pictures into Business Central.",
        epilog="exit codes: 0 ok, 1 usage/config error, 2 partial, 3 retryable, 4 safety stop, "
        "5 auth failure, 6 locked by another syncd",
    )
    p.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c",
            "--config",
            default=os.environ.get("SYNCD_CONFIG", DEFAULT_CONFIG),
            help="config file (default: $SYNCD_CONFIG or ./syncd.yaml)",
        )
        sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
        sp.add_argument("--log-json", action="store_true", default=None, help="JSON log lines even on a TTY")

    run = sub.add_parser("run", help="sync pictures (daemon, or one pass with --once)")
    config_arg(run)
    run.add_argument("--once", action="store_true", help="one pass over the mappings, then exit")
    run.add_argument("--dry-run", action="store_true", help="print the plan; change nothing anywhere")
    run.add_argument(
        "--full", action="store_true", help="ignore fingerprints; download and compare everything"
    )
    run.add_argument("--mapping", action="append", metavar="NAME", help="only this mapping (repeatable)")
    run.add_argument("--force", action="store_true", help="proceed past a safety stop")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")

    check = sub.add_parser("check", help="validate config, authenticate and read one page on both sides")
    config_arg(check)

    status = sub.add_parser("status", help="last runs, counts, failures, unmatched and ambiguous records")
    config_arg(status)
    status.add_argument("--json", action="store_true")

    ledger = sub.add_parser("ledger", help="manage the ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    reset = ledger_sub.add_parser("reset", help="forget what was synced (next run compares everything again)")
    config_arg(reset)
    reset.add_argument("--mapping", metavar="NAME")
    export = ledger_sub.add_parser("export", help="dump the ledger as JSON lines")
    config_arg(export)

    sandbox = sub.add_parser("sandbox", help="run the local SuperOffice and Business Central emulators")
    sandbox.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    sub.add_parser("demo", help="sandbox + config + two runs: watch pictures flow, then nothing to do")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sandbox"]:
        from syncd.sandbox.server import main as sandbox_main

        return sandbox_main(args_list[1:])
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits 2 on usage errors; our contract says 1
        return int(ExitCode.CONFIG) if exc.code not in (0, None) else 0
    if args.command == "demo":
        from syncd.demo import main as demo_main

        return demo_main()
    stderr = Console(stderr=True)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        stderr.print(f"[red]error:[/] {for_terminal(exc.message)}", highlight=False)
        if exc.hint:
            stderr.print(f"hint: {for_terminal(exc.hint)}", highlight=False)
        return int(ExitCode.CONFIG)
    configure_logging(json=args.log_json, level=args.log_level or config.log_level)
    warning = literal_secret_warning(args.config)
    if warning:
        log.warning(warning)
    try:
        if args.command == "run":
            if args.once or args.dry_run:
                return asyncio.run(_run_once(config, args))
            from syncd.daemon import run_daemon

            return run_daemon(config, config_path=args.config)
        if args.command == "check":
            from syncd.check import run_check

            return asyncio.run(run_check(config, Console()))
        if args.command == "status":
            return asyncio.run(_status(config, args.json))
        if args.command == "ledger":
            return asyncio.run(_ledger(config, args))
    except SyncdError as exc:
        stderr.print(f"[red]error:[/] {for_terminal(exc.message)}", highlight=False)
        if exc.hint:
            stderr.print(f"hint: {for_terminal(exc.hint)}", highlight=False)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug: say so plainly; the traceback goes through the redacting logger
        log.exception("internal error")
        stderr.print("[red]internal error[/] (a bug in syncd; the log above has the details)")
        return EXIT_INTERNAL_ERROR
    parser.error(f"unknown command {args.command}")
    return int(ExitCode.CONFIG)


async def _run_once(config: Config, args: argparse.Namespace) -> int:
    mappings = (
        [config.mapping(n) for n in args.mapping]
        if args.mapping
        else [m for m in config.mappings if m.enabled]
    )
    options = RunOptions(full=args.full, dry_run=args.dry_run, force=args.force)
    stdout = Console()
    stop = asyncio.Event()
    _install_stop_handlers(stop)
    reporter = ProgressReporter(Console(stderr=True)) if sys.stderr.isatty() and not args.json else None
    with reporter if reporter is not None else nullcontext():
        async with open_runtime(config, read_only_ledger=args.dry_run, reporter=reporter, stop=stop) as rt:
            outcomes = await run_job(rt, mappings, options, stop)
    code = job_exit_code(outcomes)
    if args.json:
        print(json.dumps({"exit_code": int(code), "mappings": outcomes_json(outcomes)}, indent=2))
    else:
        if args.dry_run:
            print_plan(sys.stdout, outcomes)
        print_summary(stdout, outcomes, dry_run=args.dry_run)
    return int(code)


def _install_stop_handlers(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM: stop taking items, finish those in flight. Second: exit at once."""
    import signal

    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            os._exit(130 if signum == signal.SIGINT else 143)
        log.warning("stopping: finishing the items in flight (again to exit at once)", signal=signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


async def _status(config: Config, as_json: bool) -> int:
    from syncd.ledger import Ledger

    if not config.ledger.exists():
        raise ConfigError(f"no ledger at {config.ledger} yet", hint="run `syncd run --once` first")
    async with Ledger.open(config.ledger, readonly=True) as ledger:
        data = await status_data(ledger, str(config.ledger))
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print_status(Console(), data)
    return 0


async def _ledger(config: Config, args: argparse.Namespace) -> int:
    from syncd.ledger import Ledger

    if args.ledger_command == "reset":
        if args.mapping:
            config.mapping(args.mapping)  # unknown names are an error, not a silent no-op
        from syncd.locks import MappingLock

        names = [args.mapping] if args.mapping else [m.name for m in config.mappings]
        async with AsyncExitStack() as locks:
            for name in names:  # never pull the ledger from under a running sync
                await locks.enter_async_context(
                    MappingLock(config.ledger, name, command="syncd ledger reset")
                )
            async with Ledger.open(config.ledger) as ledger:
                removed = await ledger.reset(args.mapping)
        what = f"mapping {args.mapping!r}" if args.mapping else "all mappings"
        print(f"ledger reset for {what}: {removed} rows forgotten; the next run compares every picture again")
        return 0
    async with Ledger.open(config.ledger, readonly=True) as ledger:
        async for row in ledger.export():
            sys.stdout.write(json.dumps(row, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
