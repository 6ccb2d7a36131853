"""Invoices per second through a whole lifecycle, against a no-op Temporal baseline.

    python bench/lifecycle.py [--invoices 200] [--concurrency 50] [--rounds 3] [--json]

Starts the embedded Temporal dev server (in memory) and a scratch SQLite ledger, then runs
each invoice the way production does (`dunwise_driver`): imported, started with the shipped
standard policy, its first reminder sent, paid in full, cleared in the ERP, receipted and
closed.

The baseline runs as many workflows with the timers and activities the real invoices'
histories show (one for one, the mix of the first round), no-ops all, driven the same way
(start, update, result) with the same concurrency. The ratio dunwise / baseline is the
share of Temporal's own throughput that dunwise keeps. Each side's figures also hold the CPU
an invoice cost: this process (the workflows and the driver), the side's activity processes
and the dev server; with both cores busy, the ratio follows their sum.

Both workers serve throughout, and the two take turns over the rounds (dunwise first in
odd rounds, the baseline first in even ones), so a machine that slows down or speeds up
during the run weighs on both alike; the ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from baseline_workflow import Shape, baseline_workers, run_baseline
from dunwise_driver import STANDARD_POLICY, Dunwise, history_shape, ledger_check
from harness import arguments, measure, scratch_stack, start_dev_server
from process_cpu import children_cpu_seconds
from temporalio.client import WorkflowHandle

from policies.loader import load_policy
from settings import default_activity_processes
from worker_processes import ACTIVITIES_ONLY, split_worker

BASELINE_QUEUE = "bench-baseline"


# What each child process runs, by a word of its command line: the dev server, and the
# activity processes of each side. Only one side works at a time, so the server's CPU during
# a round is that side's.
SERVER = "start-dev"
ACTIVITIES = {"dunwise": ACTIVITIES_ONLY, "baseline": "baseline_workflow.py"}


@dataclass(frozen=True)
class Run:
    count: int
    wall_seconds: float
    cpu_seconds: float  # this process: the workflows and the driver
    latencies: list[float]
    server_cpu_seconds: float
    activities_cpu_seconds: float  # the side's activity processes

    @property
    def per_second(self) -> float:
        return self.count / self.wall_seconds

    def __add__(self, other: Run) -> Run:
        return Run(
            self.count + other.count,
            self.wall_seconds + other.wall_seconds,
            self.cpu_seconds + other.cpu_seconds,
            self.latencies + other.latencies,
            self.server_cpu_seconds + other.server_cpu_seconds,
            self.activities_cpu_seconds + other.activities_cpu_seconds,
        )

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies)

        def each(seconds: float) -> float:
            return round(1000 * seconds / self.count, 1)

        return {
            "count": self.count,
            "wall_seconds": round(self.wall_seconds, 3),
            "per_second": round(self.per_second, 2),
            "python_cpu_ms_each": each(self.cpu_seconds),
            "activities_cpu_ms_each": each(self.activities_cpu_seconds),
            "server_cpu_ms_each": each(self.server_cpu_seconds),
            "latency_p50_seconds": round(statistics.median(ordered), 3),
            "latency_p95_seconds": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        }


async def run_all(
    count: int, concurrency: int, one: Callable[[int], Awaitable[None]], side: str
) -> Run:
    """Run one(0..count-1) with at most `concurrency` in flight; time the whole batch, and the
    CPU it cost this process, the server and the side's activity processes."""
    children = [SERVER, ACTIVITIES[side]]
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def timed(index: int) -> None:
        async with gate:
            started = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - started)

    before = children_cpu_seconds(children)
    started, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for index in range(count):
            group.create_task(timed(index))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = children_cpu_seconds(children)
    server, activities = (after[child] - before[child] for child in children)
    return Run(count, wall, cpu, latencies, server, activities)


async def bench(
    invoices: int, concurrency: int, warmup: int, rounds: int, activity_processes: int
) -> dict:
    with scratch_stack(
        "dunwise-bench-", "bench-dunwise", activity_processes=activity_processes
    ) as (settings, engine):
        async with await start_dev_server() as env:
            dunwise = Dunwise(env.client, settings, engine, load_policy(STANDARD_POLICY))
            handles: list[WorkflowHandle] = []

            async def dunwise_round(name: str, count: int) -> Run:
                async def one(index: int) -> None:
                    handles.append(await dunwise.invoice(f"{name}{index:06d}"))

                return await run_all(count, concurrency, one, "dunwise")

            async with (
                split_worker(env.client, settings, engine),
                baseline_workers(env.client, BASELINE_QUEUE, activity_processes),
            ):
                # Warm-up runs load the sandbox and fill caches; they are not timed.
                await dunwise_round("W", warmup)
                real = [await dunwise_round("R1-", invoices)]
                # Each baseline run copies the shape of one first-round invoice's history, so
                # the baseline has their mix: a payment that lands before the first reminder
                # leaves fewer timers and activities than one that lands after it.
                shapes, activities_run, lengths = await _history_shapes(handles[warmup:])

                def baseline_round(name: str, count: int) -> Awaitable[Run]:
                    def one(i: int) -> Awaitable[None]:
                        shape = shapes[i % len(shapes)]
                        return run_baseline(env.client, BASELINE_QUEUE, shape, f"{name}-{i}")

                    return run_all(count, concurrency, one, "baseline")

                await baseline_round("warmup", warmup)
                baseline = [await baseline_round("1", invoices)]
                for number in range(2, rounds + 1):
                    dunwise_first = number % 2 == 1
                    if dunwise_first:
                        real.append(await dunwise_round(f"R{number}-", invoices))
                    baseline.append(await baseline_round(str(number), invoices))
                    if not dunwise_first:
                        real.append(await dunwise_round(f"R{number}-", invoices))
        check = ledger_check(engine, settings)
    ratios = [d.per_second / b.per_second for d, b in zip(real, baseline, strict=True)]
    (shape, names), same_shape = Counter(zip(shapes, activities_run, strict=True)).most_common(1)[0]
    counted = Counter(shapes)
    return {
        "invoices": invoices,
        "concurrency": concurrency,
        "warmup": warmup,
        "rounds": rounds,
        "activity_processes": activity_processes,
        "per_invoice": {
            **asdict(shape),
            "activity_names": list(names),
            "history_events_min": min(lengths),
            "history_events_max": max(lengths),
            "histories_of_other_shapes": invoices - same_shape,
            "shapes": [{**asdict(each), "invoices": n} for each, n in counted.most_common()],
        },
        "dunwise": sum(real[1:], real[0]).summary(),
        "baseline": sum(baseline[1:], baseline[0]).summary(),
        "ratio": round(statistics.median(ratios), 3),
        "round_ratios": [round(ratio, 3) for ratio in ratios],
        "ledger": check,
    }


async def _history_shapes(
    handles: list[WorkflowHandle],
) -> tuple[list[Shape], list[tuple[str, ...]], list[int]]:
    """Each invoice's history shape, the activities it ran, and its length, in order."""
    shapes: list[Shape] = []
    names: list[tuple[str, ...]] = []
    lengths: list[int] = []
    for handle in handles:
        shape, activity_names, length = await history_shape(handle)
        shapes.append(shape)
        names.append(tuple(activity_names))
        lengths.append(length)
    return shapes, names, lengths


def report(result: dict) -> str:
    shape = result["per_invoice"]
    lines = [
        f"{result['invoices']} invoices, concurrency {result['concurrency']}, "
        f"after {result['warmup']} warm-up runs each "
        "(embedded Temporal dev server in memory, SQLite ledger)",
        f"most invoices: {shape['timers_fired']} timer(s) fired, {shape['timers_canceled']} "
        f"canceled, {shape['activities']} activities "
        f"({', '.join(shape['activity_names'])}), {shape['history_events_min']}-"
        f"{shape['history_events_max']} history events",
        "the baseline's mix: "
        + ", ".join(
            f"{each['invoices']} with {each['timers_fired']} timer(s) fired, "
            f"{each['timers_canceled']} canceled, {each['activities']} activities"
            for each in shape["shapes"]
        ),
    ]
    for name in ("dunwise", "baseline"):
        run = result[name]
        lines.append(
            f"{name:<9} {run['count']} in {run['wall_seconds']:.2f} s = "
            f"{run['per_second']:.1f}/s  (latency p50 {run['latency_p50_seconds']:.3f} s, "
            f"p95 {run['latency_p95_seconds']:.3f} s; CPU each: "
            f"{run['python_cpu_ms_each']:.0f} ms workflows and driver, "
            f"{run['activities_cpu_ms_each']:.0f} ms activities, "
            f"{run['server_cpu_ms_each']:.0f} ms server)"
        )
    lines.append(
        f"ratio dunwise / baseline: {result['ratio']:.2f} (median of the rounds: "
        f"{', '.join(f'{ratio:.2f}' for ratio in result['round_ratios'])})"
    )
    ledger = result["ledger"]
    lines.append(
        f"ledger: {ledger['closed']} of {ledger['invoices']} invoices closed, "
        f"{ledger['erp_journal_lines']} ERP journal lines, {ledger['receipt_emails']} receipts, "
        f"{ledger['reminder_emails']} reminders"
    )
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--invoices", type=int, default=200, help="invoices (and baseline runs)")
    parser.add_argument("--concurrency", type=int, default=50, help="lifecycles in flight at once")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs of each before")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of each, alternating which goes first"
    )
    parser.add_argument(
        "--activity-processes",
        type=int,
        default=default_activity_processes(),
        help="both workers run their activities in N processes of their own (default: as "
        "DUNWISE_ACTIVITY_PROCESSES's, 1 on a machine of two cores or more)",
    )
    args = parser.parse_args()
    if min(args.invoices, args.concurrency, args.rounds) < 1:
        parser.error("--invoices, --concurrency and --rounds must be at least 1")
    if args.warmup < 0 or args.activity_processes < 0:
        parser.error("--warmup and --activity-processes must be at least 0")
    result = measure(
        bench(args.invoices, args.concurrency, args.warmup, args.rounds, args.activity_processes),
        args.json,
        report,
    )
    ledger = result["ledger"]
    expected = args.invoices * args.rounds + args.warmup
    if not ledger["closed"] == ledger["erp_journal_lines"] == ledger["receipt_emails"] == expected:
        sys.exit(f"the ledger does not show {expected} closed, cleared and receipted invoices")


if __name__ == "__main__":
    main()
