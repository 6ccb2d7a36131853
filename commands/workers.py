"""The worker `dunwise run` serves, and `dunwise worker`: a worker alone, of one side or both.

With DUNWISE_ACTIVITY_PROCESSES=N the worker of `dunwise run` keeps the workflows in run's
process and the activities in N processes of `dunwise worker --activities-only`
(worker_processes.py), which restart with the worker and never outlive run.
"""

from __future__ import annotations

import asyncio
import signal

import sqlalchemy as sa
from temporalio.client import Client

from child_process import stop_when_orphaned
from commands.errors import CommandError
from ledger.db import make_engine
from settings import DEV_SECRET_KEY, Settings
from temporal_client import connect
from worker import WorkerRole, run_worker
from worker_processes import split_worker


async def serve_worker(client: Client, settings: Settings, engine: sa.Engine) -> None:
    """The worker of `dunwise run`, until cancelled."""
    async with split_worker(client, settings, engine):
        await asyncio.Event().wait()


def cancel_on_signals() -> None:
    """SIGINT and SIGTERM cancel the command, once: cleanup then runs undisturbed."""
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: None)
        main_task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)


def refuse_development_key(settings: Settings) -> None:
    """Against a cluster, pay links and sessions must not be signed with the published key."""
    if settings.secret_key.get_secret_value() == DEV_SECRET_KEY:
        raise CommandError(
            "DUNWISE_SECRET_KEY is the development key; set a secret of your own before "
            "running against a Temporal cluster"
        )


async def connect_to_cluster(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except RuntimeError as err:
        raise CommandError(f"cannot reach Temporal at {settings.temporal_address} ({err})") from err


async def worker_command(settings: Settings, role: WorkerRole, parent: int | None) -> None:
    """`dunwise worker`: one worker against the Temporal at DUNWISE_TEMPORAL_ADDRESS."""
    cancel_on_signals()
    watching: list[asyncio.Task[None]] = []  # referenced while the worker runs
    if parent is not None:
        # A process of `dunwise run`, which checked the settings; it ends with run.
        watching.append(asyncio.create_task(stop_when_orphaned(parent)))
    elif settings.temporal_address is None:
        raise CommandError(
            "no Temporal server to work for: set DUNWISE_TEMPORAL_ADDRESS (`dunwise run` starts "
            "an embedded one)"
        )
    else:
        refuse_development_key(settings)
    client = await connect_to_cluster(settings)
    engine = make_engine(settings.effective_database_url, durable=settings.durable_writes)
    await run_worker(client, settings, engine, role)
