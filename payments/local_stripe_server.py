"""The local Stripe server's own process: localstripe's app on a socket dunwise bound, made to
behave as Stripe documents where dunwise relies on it (see `embedded_stripe` for why and how
it is started). Run only by `embedded_stripe.EmbeddedStripe`:

    python -m payments.local_stripe_server LISTEN_FD STATE_FILE
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from child_process import stop_when_orphaned

IDEMPOTENCY_SECONDS = 24 * 3600  # how long Stripe keeps an idempotency key


def serve(listen_fd: int, state_file: Path) -> None:
    """Serve localstripe's app on the socket the parent bound, its state in `state_file`."""
    import logging

    from aiohttp import web
    from localstripe import resources, server

    idempotent: dict[str, dict[str, Any]] = {}
    in_flight: set[str] = set()

    def dump(store: dict) -> None:
        cutoff = time.time() - IDEMPOTENCY_SECONDS
        for key in [key for key, saved in idempotent.items() if saved["at"] < cutoff]:
            del idempotent[key]
        partial = state_file.with_name(state_file.name + ".partial")
        with partial.open("wb") as file:
            pickle.dump({"objects": dict(store), "idempotent": idempotent}, file)
        os.replace(partial, state_file)

    def load(store: dict) -> None:
        try:
            with state_file.open("rb") as file:
                state = pickle.load(file)
            objects, answers = dict(state["objects"]), dict(state["idempotent"])
        except FileNotFoundError:
            return
        except Exception as error:
            sys.exit(f"cannot read the local Stripe state {state_file} ({error!r}); move it aside")
        dict.update(store, objects)  # plain update: no write back while loading
        idempotent.update(answers)

    # Before anything is stored: every write of localstripe's store now goes to state_file.
    resources.Store.dump_to_disk = dump
    resources.Store.try_load_from_disk = load

    def error_response(status: int, kind: str, message: str) -> web.Response:
        return web.json_response({"error": {"type": kind, "message": message}}, status=status)

    @web.middleware
    async def idempotency(request: web.Request, handler: Any) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key or not request.path.startswith("/v1/"):
            return await handler(request)
        account = request.headers.get("Authorization", "")
        scoped = hashlib.sha256(f"{account}\n{key}".encode()).hexdigest()
        asked = hashlib.sha256(request.path.encode() + b"\n" + await request.read()).hexdigest()
        saved = idempotent.get(scoped)
        if saved is not None:
            if saved["asked"] != asked:
                return error_response(
                    400,
                    "idempotency_error",
                    f"Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}'.",
                )
            replay = web.Response(body=saved["body"], status=saved["status"])
            replay.content_type = "application/json"
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
        if scoped in in_flight:
            return error_response(409, "idempotency_error", "That key is in use by a request.")
        in_flight.add(scoped)
        try:
            response = await handler(request)
        finally:
            in_flight.discard(scoped)
        # Stripe keeps the answer of every request that ran: successes and card declines.
        if isinstance(response, web.Response) and (response.status < 400 or response.status == 402):
            body = response.body if isinstance(response.body, bytes) else b""
            idempotent[scoped] = {
                "at": time.time(), "asked": asked, "status": response.status, "body": body,
            }  # fmt: skip
            resources.store.dump_to_disk()
        return response

    @web.middleware
    async def setup_attaches(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        confirmed = re.fullmatch(r"/v1/setup_intents/(seti_\w+)/confirm", request.path)
        if request.method == "POST" and confirmed and response.status == 200:
            setup = resources.SetupIntent._api_retrieve(confirmed.group(1))
            if setup.status == "succeeded" and setup.customer and setup.payment_method:
                method = resources.PaymentMethod._api_retrieve(setup.payment_method)
                if method.customer is None:
                    method.customer = setup.customer
                    resources.store.dump_to_disk()
        return response

    update_intent = resources.PaymentIntent._update

    def update_retrying(intent: Any, **data: Any) -> None:
        waiting = intent.status in ("requires_payment_method", "requires_action")
        update_intent(intent, **data)
        if waiting and data.get("payment_method"):
            # A new method after a decline or an unfinished 3-D Secure: ready to confirm again.
            failed = intent.latest_charge is not None and intent.latest_charge.status == "failed"
            intent.latest_charge = None if failed else intent.latest_charge
            intent.next_action = None

    resources.PaymentIntent._update = update_retrying
    # Outermost, so they see every answer, declines included, as the client will.
    server.app.middlewares[0:0] = [idempotency, setup_attaches]
    resources.store.try_load_from_disk()

    parent = os.getppid()
    watching: list[asyncio.Task[None]] = []

    async def watch_parent(app: web.Application) -> None:
        watching.append(asyncio.ensure_future(stop_when_orphaned(parent)))

    server.app.on_startup.append(watch_parent)

    access_log = logging.getLogger("aiohttp.access")
    access_log.setLevel(logging.INFO)
    access_log.addHandler(logging.StreamHandler())
    listener = socket.socket(fileno=listen_fd)
    web.run_app(server.app, sock=listener, access_log=access_log, print=None)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
