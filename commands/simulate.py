"""`dunwise simulate` and `dunwise demo`: policies run over invoices on a time-skipping server.

On a terminal a bar counts the days simulated, on standard error; with `--json`, or when the
timeline goes to a pipe or a file, nothing but the timeline is written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

import demo_data
from commands.errors import CommandError
from commands.progress import draws_on, progress
from policies.loader import SHIPPED_POLICIES, load_policy
from settings import Settings
from simulation import simulate
from simulation_report import format_timeline


async def simulate_command(args: argparse.Namespace) -> None:
    if args.outbox is not None:
        _require_empty_folder(args.outbox)
    policy = load_policy(args.policy)
    with tempfile.TemporaryDirectory(prefix="dunwise-simulate-") as scratch:
        with progress("simulating", total=args.days, unit="days", quiet=_quiet(args.json)) as bar:
            result = await simulate(
                policy,
                args.invoices,
                Path(scratch),
                payments_path=args.payments,
                days=args.days,
                on_days=bar.advance,
                keep_messages=args.outbox is not None,
            )
        kept = "(not kept: give --outbox to keep them)"
        if args.outbox is not None:
            if result.outbox.exists():
                shutil.copytree(result.outbox, args.outbox, dirs_exist_ok=True)
            kept = str(args.outbox.resolve())
        if args.json:
            for event in result.events:
                print(event.as_json())
        else:
            print(format_timeline(result).replace(str(result.outbox), kept))


def _require_empty_folder(folder: Path) -> None:
    """Refuse before simulating: messages of two runs must not mix."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CommandError(f"--outbox {folder}: give a new or empty folder")


async def demo_command(settings: Settings) -> None:
    folder = (settings.data_dir / "demo").resolve()
    shutil.rmtree(folder, ignore_errors=True)
    invoices, payments = demo_data.write(folder, today=date.today())
    policy = load_policy(SHIPPED_POLICIES / "standard.yaml")
    print(f"demo: {invoices} and {payments}, policy {policy.name} v{policy.version}")
    print("simulating 75 days on a time-skipping Temporal server...\n")
    with progress("simulating", total=75, unit="days", quiet=_quiet(False)) as bar:
        result = await simulate(
            policy, invoices, folder / "run", payments_path=payments, days=75, on_days=bar.advance
        )
    print(format_timeline(result))
    print(f"Ledger of the run: {folder / 'run' / 'dunwise.db'}")


def _quiet(json_output: bool) -> bool:
    """No bar for machine-read output, nor when the timeline goes to a pipe or a file (a pager
    reading it would have the bar drawn over its screen)."""
    return json_output or not draws_on(sys.stdout)
