"""`dunwise simulate` and `dunwise demo`: policies run over invoices on a time-skipping server."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from datetime import date
from pathlib import Path

import demo_data
from commands.importing import SHIPPED_POLICIES
from policies.loader import load_policy
from settings import Settings
from simulation import format_timeline, simulate


async def simulate_command(args: argparse.Namespace) -> None:
    policy = load_policy(args.policy)
    with tempfile.TemporaryDirectory(prefix="dunwise-simulate-") as scratch:
        result = await simulate(
            policy, args.invoices, Path(scratch), payments_path=args.payments, days=args.days
        )
        if args.json:
            for event in result.events:
                print(event.as_json())
        else:
            print(
                format_timeline(result).replace(str(result.outbox), "(discarded: scratch folder)")
            )


async def demo_command(settings: Settings) -> None:
    folder = (settings.data_dir / "demo").resolve()
    shutil.rmtree(folder, ignore_errors=True)
    invoices, payments = demo_data.write(folder, today=date.today())
    policy = load_policy(SHIPPED_POLICIES / "standard.yaml")
    print(f"demo: {invoices} and {payments}, policy {policy.name} v{policy.version}")
    print("simulating 75 days on a time-skipping Temporal server...\n")
    result = await simulate(policy, invoices, folder / "run", payments_path=payments, days=75)
    print(format_timeline(result))
    print(f"Ledger of the run: {folder / 'run' / 'dunwise.db'}")
