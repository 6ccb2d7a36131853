"""The web app's process side: `dunwise web` serves it alone; `dunwise run` serves it beside
the worker. With no Stripe key, the local Stripe-compatible server starts with it, and its
webhook is registered to point at this web app.

Invariants:
- The listening socket is bound before anything is registered, so a taken port is a clear
  error and port 0 works (the chosen port is printed and used for the webhook).
- Signals stay with the command (`commands.run`): the web server never installs its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
import uvicorn
from temporalio.client import Client

from commands.errors import CommandError
from embedded_stripe import EmbeddedStripe, EmbeddedStripeError
from payments.delivery_news import keep_telling_untold
from payments.services import PaymentServices
from payments.stripe_gateway import StripeGateway
from portal.app import create_app
from settings import Settings


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the command owns SIGINT and SIGTERM
        yield


@dataclass
class WebApp:
    url: str
    stripe: str  # where payments go, in words
    settings: Settings  # as the web app uses them (the local Stripe server's address)


def listening_socket(host: str, port: int) -> socket.socket:
    """The web app's listening socket, bound and non-blocking; a taken port is a CommandError."""
    # With its protocol named, asyncio turns Nagle's algorithm off on accepted connections;
    # without it every small response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise CommandError(
            f"the web app cannot listen on {host}:{port} ({err.strerror}); set "
            "DUNWISE_WEB_PORT to a free port, or 0 for any"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serving_web(
    settings: Settings, engine: sa.Engine, connect: Callable[[], Awaitable[Client]]
) -> AsyncIterator[WebApp]:
    """The web app (and the local Stripe server when no key is set), until the block ends."""
    sock = listening_socket(settings.web_host, settings.web_port)
    port = sock.getsockname()[1]
    url = f"http://{settings.web_host}:{port}"
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sock.close)
        if settings.local_stripe:
            try:
                local = await stack.enter_async_context(
                    EmbeddedStripe(settings, f"{url}/webhooks/stripe")
                )
            except EmbeddedStripeError as err:
                raise CommandError(str(err)) from err
            settings = local.settings_for(settings)
            stripe = f"local Stripe-compatible server on {local.api_base}"
        else:
            stripe = f"Stripe at {settings.effective_stripe_api_base}"
        services = PaymentServices(settings, engine, StripeGateway(settings), connect)
        retelling = asyncio.create_task(keep_telling_untold(services))
        stack.callback(retelling.cancel)
        config = uvicorn.Config(
            create_app(services), log_level="warning", lifespan="off", access_log=False
        )
        server = _Server(config)
        # Everything loaded so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise make the slowest requests several times slower.
        gc.collect()
        gc.freeze()
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                raise CommandError("the web app stopped while starting")
            await asyncio.sleep(0.02)
        try:
            yield WebApp(url=url, stripe=stripe, settings=settings)
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=5)
            if not task.done():
                task.cancel()


async def web(settings: Settings, engine: sa.Engine, connect) -> None:
    """`dunwise web`: the web app alone, until SIGINT or SIGTERM."""
    async with serving_web(settings, engine, connect) as app:
        print(f"dunwise web app on {app.url} (portal: {app.url}/pay/<token>, API: {app.url}/docs)")
        print(app.stripe)
        print("Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()
