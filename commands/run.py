"""`dunwise run`: the worker, and the embedded Temporal dev server when no address is set.

Invariants:
- Never a worker without its server: run uses an embedded server only if it started it, and
  when that server dies run restarts it (with a fresh worker) at most
  DUNWISE_TEMPORAL_RESTARTS times per window, or else stops with an error and status 1.
- SIGINT and SIGTERM, also where the shell ignored SIGINT (`nohup ... &`), stop the worker
  and then the server within seconds, leaving no server process behind.
- The web app (and, with no Stripe key, the local Stripe server) runs beside the worker
  unless `--no-web` says it runs elsewhere (`dunwise web`).
- With DUNWISE_ACTIVITY_PROCESSES the activities run in child processes that restart with
  the worker and never outlive run (worker_processes.py).
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING

import sqlalchemy as sa

from commands.errors import CommandError
from commands.workers import (
    cancel_on_signals,
    connect_to_cluster,
    refuse_development_key,
    serve_worker,
)
from embedded_temporal import DATABASE_FILE, EmbeddedServer, EmbeddedServerError
from ledger.db import make_engine
from ledger.migrate import upgrade
from settings import Settings
from temporal_client import connect, register_search_attributes

if TYPE_CHECKING:
    from commands.web import WebApp

# A stopping worker gets this long to finish; the server's own grace period comes after it.
WORKER_STOP_SECONDS = 4.0


async def run(settings: Settings, *, pick_port: bool = False, with_web: bool = True) -> None:
    if not settings.embedded_temporal:
        refuse_development_key(settings)
    cancel_on_signals()
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    if not settings.embedded_temporal:
        client = await connect_to_cluster(settings)
        await register_search_attributes(client, settings.temporal_namespace)
        async with _web_beside(settings, engine, with_web) as web_app:
            _print_banner(settings, [f"Temporal at {settings.temporal_address}"], web_app)
            await serve_worker(client, settings, engine)
        return
    try:
        async with (
            EmbeddedServer(settings, pick_port=pick_port) as server,
            _web_beside(settings, engine, with_web) as web_app,
        ):
            _print_banner(settings, _describe(server), web_app)
            await _supervise(server, settings, engine)
    except EmbeddedServerError as err:
        raise CommandError(str(err)) from err


def _web_beside(
    settings: Settings, engine: sa.Engine, with_web: bool
) -> AbstractAsyncContextManager[WebApp | None]:
    if not with_web:
        return nullcontext()
    # Imported here: the web stack takes most of a second to load, which every other
    # command would pay for nothing.
    from commands.web import serving_web

    return serving_web(settings, engine, lambda: connect(settings))


async def web_command(settings: Settings) -> None:
    """`dunwise web`: the web app alone, for deployments that scale it apart from workers."""
    from commands.web import web

    cancel_on_signals()
    upgrade(settings.effective_database_url)
    await web(settings, make_engine(settings.effective_database_url), lambda: connect(settings))


async def _supervise(server: EmbeddedServer, settings: Settings, engine: sa.Engine) -> None:
    """Run the worker against the server; restart both when the server dies."""
    restarts: deque[float] = deque()
    loop = asyncio.get_running_loop()
    while True:
        assert server.client is not None
        worker = asyncio.create_task(serve_worker(server.client, settings, engine))
        died = asyncio.create_task(server.wait())
        try:
            done, _ = await asyncio.wait({worker, died}, return_when=asyncio.FIRST_COMPLETED)
            if died not in done:  # the worker failed: its own error, or the server going down
                await asyncio.wait({died}, timeout=1)
        finally:
            died.cancel()
            if not worker.done():
                worker.cancel()
                await asyncio.wait({worker}, timeout=WORKER_STOP_SECONDS)
        if server.returncode is None:
            worker.result()  # raises the worker's error
        if not worker.cancelled() and worker.done():
            worker.exception()  # an error of the dying server's worker: retrieved, not raised
        now = loop.time()
        while restarts and now - restarts[0] > settings.temporal_restart_window_seconds:
            restarts.popleft()
        window = f"{settings.temporal_restart_window_seconds / 60:g} min"
        if len(restarts) >= settings.temporal_restarts:
            raise EmbeddedServerError(
                f"the embedded Temporal server {server.exit_reason}; it was restarted "
                f"{len(restarts)} times within {window} already, the most "
                f"DUNWISE_TEMPORAL_RESTARTS allows, so dunwise stops rather than run without "
                f"it. Its state is kept in {settings.data_dir / DATABASE_FILE}; its log: "
                f"{server.log_path}"
            )
        restarts.append(now)
        _say(
            f"the embedded Temporal server {server.exit_reason}; "
            f"restarting it (restart {len(restarts)} of {settings.temporal_restarts} "
            f"within {window})"
        )
        notes_before = len(server.notes)
        await server.restart()
        _say(f"embedded Temporal server back on 127.0.0.1:{server.port} (pid {server.pid})")
        for note in server.notes[notes_before:]:
            _say(note)


def _describe(server: EmbeddedServer) -> list[str]:
    lines = [f"embedded Temporal server on 127.0.0.1:{server.port} (pid {server.pid})"]
    ui = f"http://127.0.0.1:{server.ui_port}" if server.ui_port else "off (headless)"
    return [*lines, f"Temporal UI: {ui}", *server.notes]


def _print_banner(settings: Settings, lines: list[str], web_app: WebApp | None) -> None:
    print(f"dunwise worker on task queue {settings.temporal_task_queue!r}")
    if settings.activity_processes:
        print(
            f"activities in {settings.activity_processes} process(es) of "
            "`dunwise worker --activities-only`"
        )
    for line in lines:
        print(line)
    if web_app is not None:
        print(f"web app: {web_app.url} (portal /pay/<token>, API docs {web_app.url}/docs)")
        print(f"payments: {web_app.stripe}")
    print(f"ledger: {settings.effective_database_url}")
    print(f"outbox: {settings.effective_outbox_dir.resolve()}")
    print("Ctrl-C to stop", flush=True)


def _say(message: str) -> None:
    print(f"dunwise run: {message}", file=sys.stderr, flush=True)
