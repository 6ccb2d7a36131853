"""`dunwise run`: the worker, and the embedded Temporal dev server when no address is set."""

from __future__ import annotations

import asyncio
import signal

from commands.errors import CommandError
from ledger.db import make_engine
from ledger.migrate import upgrade
from settings import DEV_SECRET_KEY, Settings
from temporal_client import temporal
from worker import run_worker


async def run(settings: Settings) -> None:
    if not settings.embedded_temporal and settings.secret_key.get_secret_value() == DEV_SECRET_KEY:
        raise CommandError(
            "DUNWISE_SECRET_KEY is the development key; set a secret of your own before "
            "running against a Temporal cluster"
        )
    # SIGTERM (docker stop, systemd) unwinds like Ctrl-C, so the embedded server stops too.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    async with temporal(settings) as client:
        where = (
            settings.temporal_address
            or f"embedded dev server 127.0.0.1:{settings.temporal_dev_port}"
        )
        print(f"dunwise worker on task queue {settings.temporal_task_queue!r} ({where})")
        if settings.embedded_temporal:
            print(f"Temporal UI: http://127.0.0.1:{settings.temporal_ui_port}")
        print(f"ledger: {settings.effective_database_url}")
        print(f"outbox: {settings.effective_outbox_dir.resolve()}")
        print("Ctrl-C to stop")
        await run_worker(client, settings, engine)
