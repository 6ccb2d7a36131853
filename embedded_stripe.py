"""The embedded Stripe-compatible server: localstripe, run by dunwise as a child process when no
Stripe key is set, so card payments work with no set-up.

Invariants:
- It listens on 127.0.0.1 only. localstripe's own command binds every interface, so dunwise
  binds the socket itself (a taken port is an error, never a server someone else started) and
  hands it to a child (`payments.local_stripe_server`) that serves localstripe's app on it.
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
import socket
import sys
from pathlib import Path

import httpx

from child_process import ChildServer
from payments.stripe_webhooks import WEBHOOK_EVENTS
from settings import Settings

LOCK_FILE = "localstripe.lock"
STATE_FILE = "localstripe.pickle"
LOG_FILE = "localstripe.log"
WEBHOOK_NAME = "dunwise"
READY_TIMEOUT_SECONDS = 20.0


class EmbeddedStripeError(RuntimeError):
    """The local Stripe server cannot start or answer; the message says why."""


class EmbeddedStripe(ChildServer):
    """The data folder's localstripe server. Use as `async with EmbeddedStripe(settings,
    webhook_url) as stripe_server:`, then `stripe_server.settings_for(settings)`."""

    lock_file = LOCK_FILE
    log_file = LOG_FILE

    def __init__(self, settings: Settings, webhook_url: str) -> None:
        if not webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"the Stripe webhook URL must be http(s)://...; got {webhook_url!r}")
        super().__init__(settings.data_dir)
        self.settings = settings
        self.webhook_url = webhook_url
        self.port = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def js_url(self) -> str:
        return f"{self.api_base}/js.stripe.com/v3/"

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

    # ------------------------------------------------------------------ internals

    def _hold_data_folder(self) -> None:
        if not self._lock_data_folder():
            raise EmbeddedStripeError(
                f"another dunwise process runs the local Stripe server of "
                f"{self.settings.data_dir}; a data folder has one at a time, so stop that one first"
            )

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
            sys.executable, "-m", "payments.local_stripe_server",
            str(listener.fileno()), str(self.state_path.resolve()),
        ]  # fmt: skip
        await self._spawn(command, pass_fds=(listener.fileno(),))

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
