"""The embedded Stripe-compatible server: localstripe, run by dunwise as a child process when no
Stripe key is set, so card payments work with no set-up.

Invariants:
- It listens on 127.0.0.1 only. localstripe's own command binds every interface, so dunwise
  binds the socket itself (a taken port is an error, never a server someone else started) and
  hands it to a child that serves localstripe's app on it.
- One server per data folder, its owner holding an exclusive lock on `<data>/localstripe.lock`.
  localstripe pickles its objects to the fixed path /tmp/localstripe.pickle; the child keeps
  them in `<data>/localstripe.pickle` instead (replaced whole on every write), so servers of
  two data folders never share state and a restarted server has its customers back.
- Where localstripe differs from Stripe in ways dunwise relies on, the child behaves as Stripe
  documents: a POST with an `Idempotency-Key` seen before is answered with the first answer
  (and refused if its parameters differ); a SetupIntent that succeeds attaches its payment method
  to its customer; a PaymentIntent declined or awaiting 3-D Secure takes a new payment method.
- localstripe keeps webhooks in memory only, so the `dunwise` webhook is registered on every
  start, for the events in `WEBHOOK_EVENTS`, signed with the configured webhook secret.
- The child runs in a session of its own and is stopped on exit (SIGTERM, then SIGKILL after a
  grace period); if its parent dies without stopping it, it stops itself: no process is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import pickle
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

from payments.stripe_webhooks import WEBHOOK_EVENTS
from settings import Settings

LOCK_FILE = "localstripe.lock"
STATE_FILE = "localstripe.pickle"
LOG_FILE = "localstripe.log"
WEBHOOK_NAME = "dunwise"
READY_TIMEOUT_SECONDS = 20.0
STOP_GRACE_SECONDS = 3.0
IDEMPOTENCY_SECONDS = 24 * 3600  # how long Stripe keeps an idempotency key


class EmbeddedStripeError(RuntimeError):
    """The local Stripe server cannot start or answer; the message says why."""


class EmbeddedStripe:
    """The data folder's localstripe server. Use as `async with EmbeddedStripe(settings,
    webhook_url) as stripe_server:`, then `stripe_server.settings_for(settings)`."""

    def __init__(self, settings: Settings, webhook_url: str) -> None:
        if not webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"the Stripe webhook URL must be http(s)://...; got {webhook_url!r}")
        self.settings = settings
        self.webhook_url = webhook_url
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._lock: IO[str] | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def js_url(self) -> str:
        return f"{self.api_base}/js.stripe.com/v3/"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path:
        return self.settings.data_dir / LOG_FILE

    @property
    def state_path(self) -> Path:
        return self.settings.data_dir / STATE_FILE

    def settings_for(self, settings: Settings) -> Settings:
        """A copy of `settings` whose Stripe API and Stripe.js are this server's."""
        return settings.model_copy(
            update={"stripe_api_base": self.api_base, "stripe_js_url": self.js_url}
        )

    async def __aenter__(self) -> EmbeddedStripe:
        try:
            self._hold_data_folder()
            listener = self._bind()
            try:
                await self._launch(listener)
            finally:
                listener.close()  # the child has its own copy
            await asyncio.wait_for(self._wait_until_ready(), READY_TIMEOUT_SECONDS)
            await self._register_webhook()
        except TimeoutError:
            await self.close()
            raise EmbeddedStripeError(
                f"the local Stripe server did not answer on 127.0.0.1:{self.port} within "
                f"{READY_TIMEOUT_SECONDS:.0f} s; its log: {self.log_path}"
            ) from None
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    # ------------------------------------------------------------------ internals

    def _hold_data_folder(self) -> None:
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = (data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise EmbeddedStripeError(
                f"another dunwise process runs the local Stripe server of {data_dir}; a data "
                "folder has one at a time, so stop that one first"
            ) from None
        self._lock = lock

    def _bind(self) -> socket.socket:
        wanted = self.settings.local_stripe_port
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # As servers do: a port left in TIME_WAIT is free, one with a listener is not.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", wanted))
        except OSError as error:
            listener.close()
            raise EmbeddedStripeError(
                f"port {wanted} on 127.0.0.1 (DUNWISE_LOCAL_STRIPE_PORT) is not available for "
                f"the local Stripe server: {error.strerror}. Stop what holds it, or set "
                "DUNWISE_LOCAL_STRIPE_PORT to a free port (0 picks one)"
            ) from None
        listener.listen(128)
        self.port = listener.getsockname()[1]
        return listener

    async def _launch(self, listener: socket.socket) -> None:
        command = [
            sys.executable, str(Path(__file__).resolve()),
            str(listener.fileno()), str(self.state_path.resolve()),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(listener.fileno(),),
                start_new_session=True,
            )

    async def _wait_until_ready(self) -> None:
        process = self._process
        assert process is not None
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
            while True:
                if process.returncode is not None:
                    raise EmbeddedStripeError(
                        f"the local Stripe server exited with status {process.returncode} "
                        f"while starting: {self._last_log_line()} (log: {self.log_path})"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.js_url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    async def _register_webhook(self) -> None:
        body = {
            "url": self.webhook_url,
            "secret": self.settings.stripe_webhook_secret.get_secret_value(),
            "events": [str(kind) for kind in WEBHOOK_EVENTS],
        }
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
                answer = await client.post(
                    f"{self.api_base}/_config/webhooks/{WEBHOOK_NAME}", json=body
                )
            refusal = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
        except httpx.HTTPError as error:
            refusal = f"{type(error).__name__}: {error}"
        if refusal is not None:
            raise EmbeddedStripeError(
                f"the local Stripe server did not take the webhook for {self.webhook_url} "
                f"({refusal}); its log: {self.log_path}"
            )

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "no log"
        return lines[-1] if lines else "nothing in its log"


# ---------------------------------------------------------------------- the child process


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

    async def stop_when_orphaned() -> None:
        # A parent killed outright cannot stop its child: the child notices and stops itself.
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    async def watch_parent(app: web.Application) -> None:
        watching.append(asyncio.ensure_future(stop_when_orphaned()))

    server.app.on_startup.append(watch_parent)

    access_log = logging.getLogger("aiohttp.access")
    access_log.setLevel(logging.INFO)
    access_log.addHandler(logging.StreamHandler())
    listener = socket.socket(fileno=listen_fd)
    web.run_app(server.app, sock=listener, access_log=access_log, print=None)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
