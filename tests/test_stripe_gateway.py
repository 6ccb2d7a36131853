"""The Stripe gateway against a real local Stripe server (localstripe started by EmbeddedStripe
on a free port of 127.0.0.1), through the official SDK over real HTTP.

Cards are saved the way the portal page saves them: the test sends what Stripe.js sends for
`confirmCardSetup`, with only the publishable key and the SetupIntent's client secret.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import stripe

from embedded_stripe import EmbeddedStripe
from payments.stripe_gateway import (
    DECLINED_MESSAGE,
    GatewayError,
    GatewayUnavailable,
    IntentStatus,
    PaymentDeclined,
    PaymentMethodRefused,
    StripeGateway,
)
from settings import Settings
from tests.stripe_signing import complete_card_payment, confirm_card_setup

SECRET_KEY = "sk_test_gateway_" + secrets.token_hex(8)  # distinctive: must never show in errors
VISA = "4242424242424242"
DECLINED_ON_CHARGE = "4000000000000341"  # saves fine, every charge is declined
THREE_D_SECURE = "4000002500003155"


def local_settings(folder: Path, **changes: object) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=folder,
        local_stripe_port=0,
        stripe_secret_key=SECRET_KEY,
        **changes,
    )


@pytest.fixture(scope="module")
async def stripe_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStripe]:
    settings = local_settings(tmp_path_factory.mktemp("stripe"))
    # No webhook receiver here (tests/test_embedded_stripe.py has one); nothing listens there.
    async with EmbeddedStripe(settings, "http://127.0.0.1:9/webhooks/stripe") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(stripe_server: EmbeddedStripe) -> StripeGateway:
    return StripeGateway(stripe_server.settings_for(stripe_server.settings))


@pytest.fixture(scope="module")
def raw(stripe_server: EmbeddedStripe) -> stripe.StripeClient:
    """The SDK without the gateway, to look at what Stripe holds."""
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_server.api_base})


def new_customer(gateway: StripeGateway) -> str:
    customer_id = f"cust-{secrets.token_hex(4)}"
    return gateway.ensure_customer(
        customer_id=customer_id, name="Acme Corp", email="ap@acme.example", existing_id=None
    )


def saved_card(gateway: StripeGateway, stripe_customer_id: str, number: str) -> str:
    setup = gateway.create_setup_intent(
        stripe_customer_id=stripe_customer_id, idempotency_key=f"setup-{secrets.token_hex(6)}"
    )
    confirmed = confirm_card_setup(
        gateway.api_base, gateway.publishable_key, setup.client_secret, number
    )
    assert confirmed["status"] == "succeeded"
    return confirmed["payment_method"]


def new_intent(gateway: StripeGateway, stripe_customer_id: str, amount_minor: int = 12_345):
    return gateway.create_payment_intent(
        amount_minor=amount_minor,
        currency="usd",
        method="card",
        stripe_customer_id=stripe_customer_id,
        metadata={"checkout": "chk-1"},
        idempotency_key=f"checkout-{secrets.token_hex(6)}",
    )


def assert_no_secret(error: BaseException) -> None:
    assert SECRET_KEY not in str(error)
    assert SECRET_KEY not in repr(error.args)


# --- customers --------------------------------------------------------------------------------


def test_keys_and_script_come_from_settings(gateway: StripeGateway, stripe_server: EmbeddedStripe):
    assert gateway.publishable_key == "pk_test_dunwise_local"
    assert gateway.js_url == f"{stripe_server.api_base}/js.stripe.com/v3/"
    assert gateway.api_base == stripe_server.api_base


def test_ensure_customer_is_idempotent_per_dunwise_customer(
    gateway: StripeGateway, raw: stripe.StripeClient
):
    customer_id = f"acme-{secrets.token_hex(4)}"
    first = gateway.ensure_customer(
        customer_id=customer_id, name="Acme", email="ap@acme.example", existing_id=None
    )
    again = gateway.ensure_customer(
        customer_id=customer_id, name="Acme", email="ap@acme.example", existing_id=None
    )
    other = gateway.ensure_customer(
        customer_id=customer_id + "-b", name="Acme", email=None, existing_id=None
    )
    assert first.startswith("cus_")
    assert again == first
    assert other != first
    stored = raw.v1.customers.retrieve(first)
    assert stored.metadata["dunwise_customer_id"] == customer_id
    assert (stored.name, stored.email) == ("Acme", "ap@acme.example")


def test_ensure_customer_keeps_an_existing_id(gateway: StripeGateway):
    assert (
        gateway.ensure_customer(customer_id="acme", name="Acme", email=None, existing_id="cus_kept")
        == "cus_kept"
    )
    with pytest.raises(ValueError, match="dunwise customer id"):
        gateway.ensure_customer(customer_id="", name="Acme", email=None, existing_id=None)


# --- payment intents --------------------------------------------------------------------------


def test_payment_intent_repeated_with_its_key_is_the_same_intent(
    gateway: StripeGateway, raw: stripe.StripeClient
):
    customer = new_customer(gateway)
    asked = dict(
        amount_minor=4_250,
        currency="eur",
        method="card",
        stripe_customer_id=customer,
        metadata={"checkout": "chk-9", "invoices": "INV-1,INV-2"},
        idempotency_key=f"checkout-{secrets.token_hex(6)}",
    )
    first = gateway.create_payment_intent(**asked)
    again = gateway.create_payment_intent(**asked)
    other = gateway.create_payment_intent(**{**asked, "idempotency_key": "checkout-other"})
    assert again == first
    assert other.id != first.id
    assert (first.amount_minor, first.currency) == (4_250, "EUR")
    assert first.status == IntentStatus.REQUIRES_PAYMENT_METHOD
    assert first.client_secret.startswith(first.id + "_secret_")
    stored = raw.v1.payment_intents.retrieve(first.id)
    assert (stored.currency, stored.customer) == ("eur", customer)
    assert stored.metadata["invoices"] == "INV-1,INV-2"
    assert gateway.retrieve_payment_intent(first.id) == first


def test_a_key_reused_for_another_amount_is_refused(gateway: StripeGateway):
    customer = new_customer(gateway)
    key = f"checkout-{secrets.token_hex(6)}"
    gateway.create_payment_intent(
        amount_minor=100, currency="usd", method="card", stripe_customer_id=customer,
        metadata={}, idempotency_key=key,
    )  # fmt: skip
    with pytest.raises(GatewayError, match="same parameters") as refused:
        gateway.create_payment_intent(
            amount_minor=200, currency="usd", method="card", stripe_customer_id=customer,
            metadata={}, idempotency_key=key,
        )  # fmt: skip
    assert key in str(refused.value)
    assert_no_secret(refused.value)


def test_bank_debit_intent(gateway: StripeGateway):
    intent = gateway.create_payment_intent(
        amount_minor=99_00,
        currency="USD",
        method="us_bank_account",
        stripe_customer_id=new_customer(gateway),
        metadata={},
        idempotency_key=f"checkout-{secrets.token_hex(6)}",
    )
    assert (intent.amount_minor, intent.currency) == (99_00, "USD")
    assert intent.status == IntentStatus.REQUIRES_PAYMENT_METHOD


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount_minor": 0}, "positive integer"),
        ({"amount_minor": -5}, "positive integer"),
        ({"amount_minor": True}, "positive integer"),
        ({"amount_minor": 12.5}, "positive integer"),
        ({"currency": "US"}, "ISO 4217"),
        ({"currency": "us1"}, "ISO 4217"),
        ({"method": "paypal"}, "unknown payment method"),
        ({"idempotency_key": " "}, "idempotency_key"),
    ],
)
def test_bad_payment_intent_requests_are_refused_before_stripe(
    gateway: StripeGateway, raw: stripe.StripeClient, change: dict, message: str
):
    before = len(raw.v1.payment_intents.list({"limit": 100}).data)
    asked = dict(
        amount_minor=1_000, currency="usd", method="card", stripe_customer_id="cus_x",
        metadata={}, idempotency_key=f"checkout-{secrets.token_hex(6)}",
    )  # fmt: skip
    with pytest.raises(ValueError, match=message):
        gateway.create_payment_intent(**{**asked, **change})
    assert len(raw.v1.payment_intents.list({"limit": 100}).data) == before


def test_stripe_refusal_names_the_operation(gateway: StripeGateway):
    with pytest.raises(GatewayError, match="read PaymentIntent pi_missing") as refused:
        gateway.retrieve_payment_intent("pi_missing")
    assert not isinstance(refused.value, PaymentDeclined | GatewayUnavailable)
    assert_no_secret(refused.value)


# --- saved cards and paying -------------------------------------------------------------------


def test_saved_card_pays(gateway: StripeGateway, raw: stripe.StripeClient):
    customer = new_customer(gateway)
    assert gateway.saved_cards(customer) == []
    method = saved_card(gateway, customer, VISA)
    [card] = gateway.saved_cards(customer)
    assert (card.id, card.last4, card.exp_month, card.exp_year) == (method, "4242", 12, 2034)
    assert card.brand == "visa"
    intent = new_intent(gateway, customer)

    paid = gateway.pay_with_saved_method(
        payment_intent_id=intent.id, payment_method_id=method, stripe_customer_id=customer
    )
    assert paid.status == IntentStatus.SUCCEEDED
    assert paid.amount_minor == intent.amount_minor
    charge = raw.v1.payment_intents.retrieve(intent.id).latest_charge
    # A second press of "pay" charges nothing more.
    again = gateway.pay_with_saved_method(
        payment_intent_id=intent.id, payment_method_id=method, stripe_customer_id=customer
    )
    assert again.status == IntentStatus.SUCCEEDED
    assert raw.v1.payment_intents.retrieve(intent.id).latest_charge == charge


def test_declined_card_then_another_card_on_the_same_intent(gateway: StripeGateway):
    customer = new_customer(gateway)
    declining = saved_card(gateway, customer, DECLINED_ON_CHARGE)
    good = saved_card(gateway, customer, VISA)
    assert {card.last4 for card in gateway.saved_cards(customer)} == {"0341", "4242"}
    intent = new_intent(gateway, customer)

    with pytest.raises(PaymentDeclined) as declined:
        gateway.pay_with_saved_method(
            payment_intent_id=intent.id, payment_method_id=declining, stripe_customer_id=customer
        )
    assert str(declined.value) == DECLINED_MESSAGE
    assert declined.value.code == "card_declined"
    assert_no_secret(declined.value)
    assert gateway.retrieve_payment_intent(intent.id).status == (
        IntentStatus.REQUIRES_PAYMENT_METHOD
    )

    paid = gateway.pay_with_saved_method(
        payment_intent_id=intent.id, payment_method_id=good, stripe_customer_id=customer
    )
    assert paid.status == IntentStatus.SUCCEEDED


def test_three_d_secure_card_needs_the_payer(gateway: StripeGateway):
    customer = new_customer(gateway)
    method = saved_card(gateway, customer, THREE_D_SECURE)
    intent = new_intent(gateway, customer)
    asked = gateway.pay_with_saved_method(
        payment_intent_id=intent.id, payment_method_id=method, stripe_customer_id=customer
    )
    assert asked.status == IntentStatus.REQUIRES_ACTION
    completed = complete_card_payment(
        gateway.api_base, gateway.publishable_key, asked.client_secret
    )
    assert completed["status"] == "succeeded"
    assert gateway.retrieve_payment_intent(intent.id).status == IntentStatus.SUCCEEDED


def test_another_card_instead_of_finishing_three_d_secure(gateway: StripeGateway):
    customer = new_customer(gateway)
    asking = saved_card(gateway, customer, THREE_D_SECURE)
    intent = new_intent(gateway, customer)
    pay = dict(payment_intent_id=intent.id, stripe_customer_id=customer)
    assert gateway.pay_with_saved_method(payment_method_id=asking, **pay).status == (
        IntentStatus.REQUIRES_ACTION
    )
    # Pressing "pay" again leaves the authentication to finish; another card pays at once.
    assert gateway.pay_with_saved_method(payment_method_id=asking, **pay).status == (
        IntentStatus.REQUIRES_ACTION
    )
    other = saved_card(gateway, customer, VISA)
    assert gateway.pay_with_saved_method(payment_method_id=other, **pay).status == (
        IntentStatus.SUCCEEDED
    )


def test_another_customers_card_or_intent_is_refused(
    gateway: StripeGateway, raw: stripe.StripeClient
):
    payer, other = new_customer(gateway), new_customer(gateway)
    others_card = saved_card(gateway, other, VISA)
    payers_card = saved_card(gateway, payer, VISA)
    intent = new_intent(gateway, payer)

    with pytest.raises(PaymentMethodRefused, match="not saved on Stripe customer") as refused:
        gateway.pay_with_saved_method(
            payment_intent_id=intent.id, payment_method_id=others_card, stripe_customer_id=payer
        )
    assert_no_secret(refused.value)
    untouched = raw.v1.payment_intents.retrieve(intent.id)
    assert (untouched.status, untouched.payment_method) == ("requires_payment_method", None)
    assert [card.id for card in gateway.saved_cards(payer)] == [payers_card]

    others_intent = new_intent(gateway, other)
    with pytest.raises(PaymentMethodRefused, match="is not Stripe customer"):
        gateway.pay_with_saved_method(
            payment_intent_id=others_intent.id,
            payment_method_id=payers_card,
            stripe_customer_id=payer,
        )
    assert raw.v1.payment_intents.retrieve(others_intent.id).payment_method is None


def test_unknown_payment_method_is_an_error_not_a_charge(gateway: StripeGateway):
    customer = new_customer(gateway)
    intent = new_intent(gateway, customer)
    with pytest.raises(GatewayError, match="pm_nothing"):
        gateway.pay_with_saved_method(
            payment_intent_id=intent.id, payment_method_id="pm_nothing", stripe_customer_id=customer
        )
    assert gateway.retrieve_payment_intent(intent.id).status == (
        IntentStatus.REQUIRES_PAYMENT_METHOD
    )


def test_setup_intent_repeated_with_its_key(gateway: StripeGateway):
    customer = new_customer(gateway)
    key = f"setup-{secrets.token_hex(6)}"
    first = gateway.create_setup_intent(stripe_customer_id=customer, idempotency_key=key)
    assert first.client_secret.startswith(first.id + "_secret_")
    assert gateway.create_setup_intent(stripe_customer_id=customer, idempotency_key=key) == first
    with pytest.raises(ValueError, match="idempotency_key"):
        gateway.create_setup_intent(stripe_customer_id=customer, idempotency_key="")


def test_cancel(gateway: StripeGateway):
    customer = new_customer(gateway)
    intent = new_intent(gateway, customer)
    assert gateway.cancel_payment_intent(intent.id).status == IntentStatus.CANCELED
    assert gateway.cancel_payment_intent(intent.id).status == IntentStatus.CANCELED

    paid = new_intent(gateway, customer)
    gateway.pay_with_saved_method(
        payment_intent_id=paid.id,
        payment_method_id=saved_card(gateway, customer, VISA),
        stripe_customer_id=customer,
    )
    with pytest.raises(GatewayError, match=f"cancel PaymentIntent {paid.id}"):
        gateway.cancel_payment_intent(paid.id)
    assert gateway.retrieve_payment_intent(paid.id).status == IntentStatus.SUCCEEDED


# --- Stripe out of reach, or refusing the key -------------------------------------------------


async def test_unreachable_stripe_is_unavailable(tmp_path: Path):
    settings = local_settings(tmp_path)
    async with EmbeddedStripe(settings, "http://127.0.0.1:9/hook") as server:
        gateway = StripeGateway(server.settings_for(settings))
        customer = new_customer(gateway)  # it answers while it runs
    with pytest.raises(GatewayUnavailable) as unavailable:
        gateway.retrieve_payment_intent("pi_any")
    assert server.api_base in str(unavailable.value)
    assert_no_secret(unavailable.value)
    with pytest.raises(GatewayUnavailable):
        gateway.saved_cards(customer)


def test_a_refused_key_is_named_but_not_shown(stripe_server: EmbeddedStripe):
    bad_key = "rk_not_a_secret_key_" + secrets.token_hex(6)
    settings = stripe_server.settings_for(
        Settings(
            _env_file=None, data_dir=stripe_server.settings.data_dir, stripe_secret_key=bad_key
        )
    )
    with pytest.raises(GatewayError, match="DUNWISE_STRIPE_SECRET_KEY") as refused:
        StripeGateway(settings).retrieve_payment_intent("pi_any")
    assert bad_key not in str(refused.value)
