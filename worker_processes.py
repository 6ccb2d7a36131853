"""A worker split over processes: the workflows in this one, the activities (rendering, the
ledger, delivery, the ERP) in processes of `dunwise worker --activities-only` on the same
server and task queue. Python runs one thread at a time per process, so each side then has a
core of its own (DUNWISE_ACTIVITY_PROCESSES).

Invariants:
- A process that exits is started again after a pause, for as long as its block runs.
- None outlives its block: each is stopped (SIGTERM, then SIGKILL after the grace period)
  when the block ends, and it stops itself if this process dies without that
  (`dunwise worker --parent`).
- A process gets these settings as DUNWISE_ variables, and no other DUNWISE_ variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence

import sqlalchemy as sa
from pydantic import SecretStr
from temporalio.client import Client

import child_process
from settings import Settings
from worker import WorkerRole, build_worker

RESTART_PAUSE_SECONDS = 1.0
STDERR = 2


# The flag that makes `dunwise worker` an activity process; it names such processes by their
# command line.
ACTIVITIES_ONLY = "--activities-only"


def activity_worker_command() -> list[str]:
    """`dunwise worker --activities-only`, as a child of this process."""
    return [
        *(sys.executable, "-m", "starter", "worker", ACTIVITIES_ONLY),
        *("--parent", str(os.getpid())),
    ]


@contextlib.asynccontextmanager
async def split_worker(
    client: Client, settings: Settings, engine: sa.Engine
) -> AsyncIterator[None]:
    """The worker of `settings`: all in this process, or with DUNWISE_ACTIVITY_PROCESSES its
    workflows here and its activities in that many processes, on the client's server."""
    count = settings.activity_processes
    role = WorkerRole.WORKFLOWS if count else WorkerRole.ALL
    address = client.service_client.config.target_host
    env = settings_environment(settings, temporal_address=address)
    async with (
        kept_processes([activity_worker_command()] * count, env),
        build_worker(client, settings, engine, role=role),
    ):
        yield


@contextlib.asynccontextmanager
async def kept_processes(
    commands: Sequence[Sequence[str]], env: dict[str, str]
) -> AsyncIterator[None]:
    """Each command a child process while the block runs, started again whenever it exits."""
    processes: list[asyncio.subprocess.Process | None] = [None] * len(commands)

    async def keep(index: int) -> None:
        while True:
            # Their output goes to stderr: stdout is the parent's (`simulate --json`).
            process = await asyncio.create_subprocess_exec(*commands[index], env=env, stdout=STDERR)
            processes[index] = process
            code = await process.wait()
            print(
                f"dunwise: a worker process (pid {process.pid}) exited with status {code}; "
                "starting another",
                file=sys.stderr,
                flush=True,
            )
            await asyncio.sleep(RESTART_PAUSE_SECONDS)

    kept = [asyncio.create_task(keep(index)) for index in range(len(commands))]
    try:
        yield
    finally:
        for task in kept:
            task.cancel()
        await asyncio.gather(*kept, return_exceptions=True)
        await asyncio.gather(*(child_process.stop(process) for process in processes))


def settings_environment(settings: Settings, **more: str) -> dict[str, str]:
    """This process's environment with `settings` (and `more`) as the DUNWISE_ variables a
    child process reads them from, and no other DUNWISE_ variable."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DUNWISE_")}
    values = {**settings.model_dump(mode="json", exclude_none=True), **more}
    for name, value in values.items():
        field = getattr(settings, name, None)
        if isinstance(field, SecretStr):
            value = field.get_secret_value()
        env[f"DUNWISE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env
