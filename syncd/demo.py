"""``syncd demo``: the built-in sandbox, a config for it, and two runs.

The first run mirrors every matched SuperOffice picture into Business Central (customers of two
companies, and employees); the second finds
nothing to do and writes nothing. The sandbox's own request counters prove it (PATCH per run).
Everything lives in ``./demo/`` (config + ledger) so you can poke at it afterwards:
``syncd status -c demo/syncd.yaml``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from rich.console import Console

from syncd.config import load_config
from syncd.jobs import job_exit_code, run_job
from syncd.logs import configure_logging
from syncd.report import print_summary
from syncd.run import RunOptions
from syncd.runtime import open_runtime
from syncd.sandbox.data import SECOND_COMPANY_NAME
from syncd.sandbox.server import Sandbox

DEMO_DIR = Path("demo")


def _fresh_demo_dir() -> None:
    DEMO_DIR.mkdir(exist_ok=True)
    for p in DEMO_DIR.glob("syncd-ledger.sqlite*"):
        if p.is_file():  # the ledger and its WAL files; the .locks directory stays
            p.unlink()


async def _demo(console: Console) -> int:
    await asyncio.to_thread(_fresh_demo_dir)
    config_path = DEMO_DIR / "syncd.yaml"
    ledger = DEMO_DIR / "syncd-ledger.sqlite"
    async with Sandbox(seed=1, contacts=150, persons=150) as sandbox:
        cfg = sandbox.config(ledger="./syncd-ledger.sqlite")
        # The sandbox's SuperOffice side is not rate-limited; Business Central keeps its real ceiling.
        cfg["superoffice"]["limits"] = {"requests_per_second": 200, "concurrency": 16}
        # The same contacts also feed the customers of a second company: one token, one rate limit.
        cfg["mappings"].append(
            {
                "name": "customers-de",
                "company": SECOND_COMPANY_NAME,
                "source": "contact",
                "target": "customers",
                "match": {"source": "code", "target": "number"},
            }
        )
        config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        config_path.chmod(0o600)  # it holds the sandbox's (public, fake) secrets literally
        console.rule("[bold]syncd demo")
        console.print(f"SuperOffice sandbox:      {sandbox.so_url}")
        console.print(f"Business Central sandbox: {sandbox.bc_url}")
        console.print(f"config: {config_path}   ledger: {ledger}\n")
        config = load_config(config_path)
        code = 0
        for n, title in (
            (1, "first run: pictures flow into Business Central"),
            (2, "second run: nothing changed, so nothing is written"),
        ):
            console.rule(f"[bold]run {n} — {title}")
            before = sandbox.bc.log.count(method="PATCH")
            async with open_runtime(config) as rt:
                outcomes = await run_job(rt, config.mappings, RunOptions())
            print_summary(console, outcomes, dry_run=False, max_listed=4 if n == 1 else 0)
            patches = sandbox.bc.log.count(method="PATCH") - before
            console.print(
                f"[bold]Business Central sandbox received {patches} picture PATCH requests in run {n}.[/]\n"
            )
            code = max(code, int(job_exit_code(outcomes)))
        console.print(
            "Next: `syncd status -c demo/syncd.yaml`, `syncd run --once --dry-run -c demo/syncd.yaml`, "
            "or `syncd sandbox --write-config my.yaml` to keep the emulators running."
        )
        # The sandbox data holds a few broken pictures on purpose: they fail (exit 2, partial) and are
        # listed with their reason. That is what the demo shows, so it is not an error of the demo.
        return 0 if code in (0, 2) else code


def main() -> int:
    configure_logging(json=False, level="error")  # the summaries say it all
    return asyncio.run(_demo(Console()))
