"""The embedded Stripe server: a real localstripe child process on 127.0.0.1, its webhook posting
signed events to a real HTTP server on loopback, its state kept per data folder.

Every wait is bounded; every server is started on a free port and stopped by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from aiohttp import web
from playwright.async_api import async_playwright

from embedded_stripe import LOG_FILE, STATE_FILE, EmbeddedStripe, EmbeddedStripeError
from payments.stripe_gateway import IntentStatus, PaymentDeclined, StripeGateway
from payments.stripe_webhooks import (
    WEBHOOK_EVENTS,
    StripeEventKind,
    WebhookSignatureError,
    verify_event,
)
from settings import Settings
from tests.stripe_signing import confirm_card_setup, event, sign_payload

WEBHOOK_SECRET = "whsec_test_" + secrets.token_hex(8)
EVENT_WAIT_SECONDS = 15.0  # localstripe posts an event a second after it happens
FIXED_PICKLE = Path("/tmp/localstripe.pickle")  # where localstripe alone would keep its state
CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
# The calls a payment page makes, on the local server's Stripe.js: save the typed card to the
# payer's Stripe customer, and finish 3-D Secure on an intent the server confirmed.
CARD_PAGE = """<!doctype html><html><body>
<script src="{js_url}"></script>
<div id="card"></div>
<script>
const stripe = Stripe("{publishable_key}");
const card = stripe.elements().create("card");
card.mount("#card");
window.saveCard = async (clientSecret) => {{
  const result = await stripe.confirmCardSetup(clientSecret, {{
    payment_method: {{card: card, billing_details: {{name: "Acme AP"}}}},
  }});
  return result.error ? {{error: result.error.message}} : result.setupIntent;
}};
window.finishPayment = async (clientSecret) => {{
  const result = await stripe.confirmCardPayment(clientSecret);
  return result.error ? {{error: result.error.message}} : result.paymentIntent;
}};
</script></body></html>"""


def local_settings(folder: Path, **changes: Any) -> Settings:
    changes.setdefault("local_stripe_port", 0)
    return Settings(
        _env_file=None, data_dir=folder, stripe_webhook_secret=WEBHOOK_SECRET, **changes
    )


class WebhookReceiver:
    """A real HTTP endpoint on 127.0.0.1 that keeps every request posted to it."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, str | None]] = asyncio.Queue()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await self.received.put((await request.read(), request.headers.get("Stripe-Signature")))
        return web.Response(text="ok")

    async def wait_for(self, kind: str, object_id: str) -> tuple[bytes, str | None, list[str]]:
        """The first delivery of `kind` about `object_id`, and the types of all seen so far."""
        seen: list[str] = []
        async with asyncio.timeout(EVENT_WAIT_SECONDS):
            while True:
                body, signature = await self.received.get()
                posted = json.loads(body)
                seen.append(posted["type"])
                if posted["type"] == kind and posted["data"]["object"]["id"] == object_id:
                    return body, signature, seen


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/webhooks/stripe", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/webhooks/stripe"
    yield hook
    await runner.cleanup()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def listeners(port: int) -> dict[str, set[str]]:
    """The local addresses (hex, as the kernel lists them) listening on `port`, per family."""
    found: dict[str, set[str]] = {"tcp": set(), "tcp6": set()}
    for family in found:
        for line in Path(f"/proc/net/{family}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found[family].add(address)
    return found


def zombie(pid: int) -> bool:
    """Ended: gone, or waiting for its parent (init, once orphaned) to collect it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                pids.append(int(proc.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pids


def fixed_pickle_state() -> tuple[bool, float | None]:
    try:
        return True, FIXED_PICKLE.stat().st_mtime
    except FileNotFoundError:
        return False, None


def pay(gateway: StripeGateway, number: str) -> str:
    """Save a card the way the portal page does and pay 50.00 USD with it: the intent id."""
    customer = gateway.ensure_customer(
        customer_id=f"cust-{secrets.token_hex(4)}", name="Acme", email=None, existing_id=None
    )
    setup = gateway.create_setup_intent(
        stripe_customer_id=customer, idempotency_key=secrets.token_hex(8)
    )
    method = confirm_card_setup(
        gateway.api_base, gateway.publishable_key, setup.client_secret, number
    )["payment_method"]
    intent = gateway.create_payment_intent(
        amount_minor=50_00, currency="usd", method="card", stripe_customer_id=customer,
        metadata={"checkout": "chk-1"}, idempotency_key=secrets.token_hex(8),
    )  # fmt: skip
    with contextlib.suppress(PaymentDeclined):  # a declined payment posts an event too
        gateway.pay_with_saved_method(
            payment_intent_id=intent.id, payment_method_id=method, stripe_customer_id=customer
        )
    return intent.id


# --- running it -------------------------------------------------------------------------------


async def test_serves_on_loopback_only_and_points_settings_at_itself(tmp_path: Path):
    settings = local_settings(tmp_path)
    async with EmbeddedStripe(settings, "http://127.0.0.1:9/hook") as server:
        assert server.port > 0
        assert listeners(server.port) == {"tcp": {"0100007F"}, "tcp6": set()}  # 127.0.0.1
        assert server.api_base == f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(trust_env=False) as client:
            script = await client.get(server.js_url)
        assert script.status_code == 200
        assert "confirmCardSetup" in script.text

        pointed = server.settings_for(settings)
        assert pointed.effective_stripe_api_base == server.api_base
        assert pointed.effective_stripe_js_url == server.js_url
        assert pointed.local_stripe and pointed.data_dir == settings.data_dir
        assert settings.stripe_api_base is None  # the original is untouched
    assert (tmp_path / LOG_FILE).read_text().count("GET /js.stripe.com/v3/") >= 1


async def test_the_process_is_gone_after_exit(tmp_path: Path):
    async with EmbeddedStripe(local_settings(tmp_path), "http://127.0.0.1:9/hook") as server:
        pid, port = server.pid, server.port
        assert pid is not None and Path(f"/proc/{pid}").exists()
        assert processes_mentioning(str(tmp_path / STATE_FILE)) == [pid]
    assert not Path(f"/proc/{pid}").exists()
    assert processes_mentioning(str(tmp_path / STATE_FILE)) == []
    assert not listening(port)


async def test_the_server_stops_when_its_parent_is_killed(tmp_path: Path):
    parent_code = f"""
import asyncio, sys
from pathlib import Path
from embedded_stripe import EmbeddedStripe
from settings import Settings

async def main():
    settings = Settings(_env_file=None, data_dir=Path({str(tmp_path)!r}), local_stripe_port=0)
    async with EmbeddedStripe(settings, "http://127.0.0.1:9/hook") as server:
        print(server.pid, server.port, flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", parent_code, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(30):
            line = await parent.stdout.readline()  # type: ignore[union-attr]
        child_pid, port = (int(part) for part in line.split())
        assert listening(port)
    finally:
        parent.kill()  # SIGKILL: no chance to stop its child
        await parent.wait()
    try:
        async with asyncio.timeout(10):
            while not zombie(child_pid):
                await asyncio.sleep(0.1)
    finally:
        if not zombie(child_pid):  # the test failed: leave nothing behind anyway
            os.kill(child_pid, signal.SIGKILL)
    assert not listening(port)


async def test_a_taken_port_is_a_clear_error(tmp_path: Path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = local_settings(tmp_path, local_stripe_port=taken)
        with pytest.raises(EmbeddedStripeError) as refused:
            async with EmbeddedStripe(settings, "http://127.0.0.1:9/hook"):
                pytest.fail("started on a taken port")
    message = str(refused.value)
    assert f"port {taken}" in message and "DUNWISE_LOCAL_STRIPE_PORT" in message
    assert processes_mentioning(str(tmp_path / STATE_FILE)) == []
    # Nothing is left held: the same data folder starts on a free port.
    async with EmbeddedStripe(local_settings(tmp_path), "http://127.0.0.1:9/hook") as server:
        assert server.port != taken


async def test_one_server_per_data_folder(tmp_path: Path):
    async with EmbeddedStripe(local_settings(tmp_path), "http://127.0.0.1:9/hook"):
        with pytest.raises(EmbeddedStripeError, match="another dunwise process"):
            async with EmbeddedStripe(local_settings(tmp_path), "http://127.0.0.1:9/hook"):
                pytest.fail("two servers on one data folder")


async def test_unreadable_state_is_a_clear_error(tmp_path: Path):
    (tmp_path / STATE_FILE).write_bytes(b"not a pickle")
    with pytest.raises(EmbeddedStripeError, match="exited with status 1") as failed:
        async with EmbeddedStripe(local_settings(tmp_path), "http://127.0.0.1:9/hook"):
            pytest.fail("started on unreadable state")
    assert str(tmp_path / STATE_FILE) in str(failed.value)
    assert str(tmp_path / LOG_FILE) in str(failed.value)
    assert (tmp_path / STATE_FILE).read_bytes() == b"not a pickle"  # left for the operator


def test_a_webhook_url_must_be_http():
    with pytest.raises(ValueError, match="webhook URL"):
        EmbeddedStripe(local_settings(Path("unused")), "127.0.0.1:8000/webhooks/stripe")


# --- state per data folder --------------------------------------------------------------------


async def test_data_folders_do_not_share_state(tmp_path: Path):
    before = fixed_pickle_state()
    first, second = tmp_path / "first", tmp_path / "second"
    async with (
        EmbeddedStripe(local_settings(first), "http://127.0.0.1:9/hook") as one,
        EmbeddedStripe(local_settings(second), "http://127.0.0.1:9/hook") as two,
    ):
        gateway_one = StripeGateway(one.settings_for(one.settings))
        customer = gateway_one.ensure_customer(
            customer_id="acme", name="Acme", email=None, existing_id=None
        )
        other = stripe.StripeClient("sk_test_other", base_addresses={"api": two.api_base})
        with pytest.raises(stripe.InvalidRequestError):
            other.v1.customers.retrieve(customer)
        assert customer.encode() in (first / STATE_FILE).read_bytes()
        assert customer.encode() not in (second / STATE_FILE).read_bytes()
    assert fixed_pickle_state() == before


async def test_state_and_idempotency_survive_a_restart(tmp_path: Path):
    settings = local_settings(tmp_path)
    asked = dict(
        amount_minor=7_00, currency="usd", method="card", metadata={},
        idempotency_key="checkout-restart",
    )  # fmt: skip
    async with EmbeddedStripe(settings, "http://127.0.0.1:9/hook") as server:
        gateway = StripeGateway(server.settings_for(settings))
        customer = gateway.ensure_customer(
            customer_id="acme", name="Acme", email=None, existing_id=None
        )
        intent = gateway.create_payment_intent(stripe_customer_id=customer, **asked)
    async with EmbeddedStripe(settings, "http://127.0.0.1:9/hook") as server:
        gateway = StripeGateway(server.settings_for(settings))
        again = gateway.ensure_customer(
            customer_id="acme", name="Acme", email=None, existing_id=None
        )
        assert again == customer
        assert gateway.create_payment_intent(stripe_customer_id=customer, **asked) == intent
        assert gateway.retrieve_payment_intent(intent.id) == intent


# --- the webhook ------------------------------------------------------------------------------


async def test_webhook_posts_signed_events_that_verify(tmp_path: Path, receiver: WebhookReceiver):
    settings = local_settings(tmp_path)
    async with EmbeddedStripe(settings, receiver.url) as server:
        gateway = StripeGateway(server.settings_for(settings))
        paid = pay(gateway, "4242424242424242")
        body, signature, seen = await receiver.wait_for(StripeEventKind.SUCCEEDED, paid)
        declined = pay(gateway, "4000000000000341")
        failed_body, failed_signature, seen_later = await receiver.wait_for(
            StripeEventKind.FAILED, declined
        )

    posted = verify_event(body, signature, WEBHOOK_SECRET)
    assert posted["type"] == "payment_intent.succeeded"
    assert posted["data"]["object"]["amount"] == 50_00
    assert posted["data"]["object"]["metadata"] == {"checkout": "chk-1"}
    assert verify_event(failed_body, failed_signature, WEBHOOK_SECRET)["id"].startswith("evt_")
    # Signed exactly as Stripe documents it: our independent signer gives the same header.
    assert signature is not None
    signed_at = int(signature.split(",")[0].removeprefix("t="))
    assert signature == sign_payload(body, WEBHOOK_SECRET, signed_at)
    # Only the events dunwise registered for (customers were created too: not posted).
    assert set(seen + seen_later) <= {str(kind) for kind in WEBHOOK_EVENTS}

    tampered = body.replace(b'"amount": 5000', b'"amount": 1')
    assert tampered != body
    with pytest.raises(WebhookSignatureError, match="bad signature"):
        verify_event(tampered, signature, WEBHOOK_SECRET)
    with pytest.raises(WebhookSignatureError, match="bad signature"):
        verify_event(body, signature, "whsec_someone_else")


def test_verify_event_refuses_what_stripe_did_not_sign():
    made = event(StripeEventKind.REFUNDED, {"id": "ch_1", "object": "charge"}, "evt_1")
    body = json.dumps(made).encode()
    assert verify_event(body, sign_payload(body, WEBHOOK_SECRET), WEBHOOK_SECRET) == made

    refusals = {
        "missing": (body, None),
        "empty": (body, ""),
        "garbage": (body, "garbage"),
        "too old": (body, sign_payload(body, WEBHOOK_SECRET, timestamp=1_000_000_000)),
        "other secret": (body, sign_payload(body, "whsec_other")),
        "not JSON": (b"{not json", sign_payload(b"{not json", WEBHOOK_SECRET)),
        "not UTF-8": (b"\xff\xfe", sign_payload(b"\xff\xfe", WEBHOOK_SECRET)),
        "not an event": (b"[1, 2]", sign_payload(b"[1, 2]", WEBHOOK_SECRET)),
        "no type": (b'{"id": "evt_1"}', sign_payload(b'{"id": "evt_1"}', WEBHOOK_SECRET)),
    }
    reasons = {}
    for name, (payload, header) in refusals.items():
        with pytest.raises(WebhookSignatureError) as refused:
            verify_event(payload, header, WEBHOOK_SECRET)
        reasons[name] = refused.value.reason
    assert "missing" in reasons["missing"] and "missing" in reasons["empty"]
    assert "tolerance" in reasons["too old"]
    assert "No signatures found" in reasons["other secret"]
    assert "not JSON" in reasons["not JSON"]
    assert "UTF-8" in reasons["not UTF-8"]
    assert "not a Stripe event" in reasons["not an event"]
    assert "not a Stripe event" in reasons["no type"]
    with pytest.raises(ValueError, match="DUNWISE_STRIPE_WEBHOOK_SECRET"):
        verify_event(body, sign_payload(body, ""), "")


def test_webhook_events_are_the_ones_dunwise_handles():
    assert [str(kind) for kind in WEBHOOK_EVENTS] == [
        "payment_intent.succeeded",
        "payment_intent.processing",
        "payment_intent.payment_failed",
        "charge.refunded",
        "charge.dispute.created",
    ]


# --- the browser ------------------------------------------------------------------------------


async def test_a_page_saves_and_authenticates_cards_with_the_local_stripe_js(tmp_path: Path):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    settings = local_settings(tmp_path)
    async with EmbeddedStripe(settings, "http://127.0.0.1:9/hook") as server:
        gateway = StripeGateway(server.settings_for(settings))
        html = CARD_PAGE.format(js_url=gateway.js_url, publishable_key=gateway.publishable_key)
        app = web.Application()
        app.router.add_get("/", lambda _: web.Response(text=html, content_type="text/html"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        page_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=["--no-sandbox"]
                )
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{page_port}/")
                outcomes = {}
                for number in ("4242424242424242", "4000002500003155", "4000000000000002"):
                    outcomes[number] = await _save_and_pay(page, gateway, number)
                await browser.close()
        finally:
            await runner.cleanup()
    assert outcomes == {
        "4242424242424242": ("saved", "succeeded"),
        "4000002500003155": ("saved", "succeeded after 3-D Secure"),
        "4000000000000002": ("Your card was declined.", None),  # refused when saved
    }


async def _save_and_pay(page: Any, gateway: StripeGateway, number: str) -> tuple[str, str | None]:
    customer = gateway.ensure_customer(
        customer_id=f"cust-{number}", name="Acme", email=None, existing_id=None
    )
    setup = gateway.create_setup_intent(stripe_customer_id=customer, idempotency_key=number)
    typed = {"number": number, "exp_month": "12", "exp_year": "34", "cvc": "123"}
    for field, value in {**typed, "postal_code": "10001"}.items():
        await page.fill(f"#card input[placeholder={field}]", value)
    saving = asyncio.ensure_future(page.evaluate("s => saveCard(s)", setup.client_secret))
    if number == "4000002500003155":
        await page.click("text=Complete authentication")
    saved = await saving
    if "error" in saved:
        return saved["error"], None
    assert saved["status"] == "succeeded"
    [card] = gateway.saved_cards(customer)
    assert (card.id, card.last4) == (saved["payment_method"], number[-4:])

    intent = gateway.create_payment_intent(
        amount_minor=25_00, currency="usd", method="card", stripe_customer_id=customer,
        metadata={}, idempotency_key=f"pay-{number}",
    )  # fmt: skip
    paid = gateway.pay_with_saved_method(
        payment_intent_id=intent.id, payment_method_id=card.id, stripe_customer_id=customer
    )
    if paid.status != IntentStatus.REQUIRES_ACTION:
        return "saved", paid.status
    finishing = asyncio.ensure_future(page.evaluate("s => finishPayment(s)", paid.client_secret))
    await page.click("text=Complete authentication")
    assert (await finishing)["status"] == "succeeded"
    assert gateway.retrieve_payment_intent(intent.id).status == IntentStatus.SUCCEEDED
    return "saved", "succeeded after 3-D Secure"
