"""Card and bank payments through Stripe (or the local Stripe-compatible server), with the official
SDK. It knows nothing of Temporal or the web app; callers keep the ids it returns.

Invariants:
- Card and bank details never pass through dunwise: the payer's browser gives them to Stripe.js
  (a SetupIntent saves the card on the payer's Stripe customer); dunwise handles only ids.
- A payer can only pay with a payment method attached to their own Stripe customer, and only a
  PaymentIntent of that customer: anything else is refused before Stripe is asked to charge.
- Every create carries a Stripe idempotency key, so a retried call returns what the first one
  made (the same customer, the same intent) instead of making another.
- Money is integer minor units; Stripe is sent lower-case currency codes, callers get ISO 4217
  upper case back.
- Errors are `GatewayError`s whose messages name the operation and never contain a secret key;
  `PaymentDeclined` carries a message fit to show the payer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import stripe
from pydantic import BaseModel

from ledger.models import PaymentMethodKind
from settings import Settings

REQUEST_TIMEOUT_SECONDS = 20.0
MAX_NETWORK_RETRIES = 2  # on connection errors and conflicts; POSTs carry idempotency keys
MAX_IDEMPOTENCY_KEY = 255  # Stripe's limit
DECLINED_MESSAGE = "Your card was declined."


class IntentStatus(StrEnum):
    """A PaymentIntent's status, as Stripe names it."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"  # 3-D Secure: the page finishes it with Stripe.js
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"


class IntentInfo(BaseModel):
    id: str
    client_secret: str
    status: IntentStatus
    amount_minor: int
    currency: str  # ISO 4217, upper case


class SetupInfo(BaseModel):
    id: str
    client_secret: str


class SavedCard(BaseModel):
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class GatewayError(Exception):
    """Stripe refused or could not do what was asked; the message says what and why."""


class PaymentDeclined(GatewayError):
    """The card (or bank) declined the charge. `str(error)` may be shown to the payer;
    `code` is Stripe's decline code (`card_declined`, `insufficient_funds`, ...)."""

    def __init__(self, code: str) -> None:
        super().__init__(DECLINED_MESSAGE)
        self.code = code


class GatewayUnavailable(GatewayError):
    """Stripe could not be reached (network, timeout); trying again later may work."""


class PaymentMethodRefused(GatewayError):
    """The payment method or intent is not the payer's own; nothing was charged."""


def _idempotency_key(*parts: str) -> str:
    key = "dunwise:" + ":".join(parts)
    if len(key) <= MAX_IDEMPOTENCY_KEY:
        return key
    return "dunwise:sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _intent_info(intent: Any) -> IntentInfo:
    return IntentInfo(
        id=intent.id,
        client_secret=intent.client_secret,
        status=IntentStatus(intent.status),
        amount_minor=intent.amount,
        currency=intent.currency.upper(),
    )


class StripeGateway:
    """One Stripe account (or the local server), as `settings` configure it."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.effective_stripe_secret_key
        self.api_base = settings.effective_stripe_api_base
        self._publishable_key = settings.effective_stripe_publishable_key
        self._js_url = settings.effective_stripe_js_url
        self._client = stripe.StripeClient(
            self._secret,
            base_addresses={"api": self.api_base},
            max_network_retries=MAX_NETWORK_RETRIES,
            http_client=stripe.RequestsClient(timeout=REQUEST_TIMEOUT_SECONDS),
        )

    @property
    def publishable_key(self) -> str:
        return self._publishable_key

    @property
    def js_url(self) -> str:
        """Where the payer's browser loads Stripe.js from."""
        return self._js_url

    # ------------------------------------------------------------------ customers and cards

    def ensure_customer(
        self, *, customer_id: str, name: str, email: str | None, existing_id: str | None
    ) -> str:
        """The Stripe customer id of dunwise customer `customer_id`, created on first use."""
        if existing_id:
            return existing_id
        if not customer_id:
            raise ValueError("a Stripe customer needs the dunwise customer id")
        params: dict[str, Any] = {"name": name, "metadata": {"dunwise_customer_id": customer_id}}
        if email:
            params["email"] = email
        with self._errors(f"create the Stripe customer for customer {customer_id}"):
            customer = self._client.v1.customers.create(
                params, {"idempotency_key": _idempotency_key("customer", customer_id)}
            )
        return customer.id

    def create_setup_intent(self, *, stripe_customer_id: str, idempotency_key: str) -> SetupInfo:
        """A SetupIntent with which the payer's browser saves a card on their Stripe customer."""
        _require("idempotency_key", idempotency_key)
        params: dict[str, Any] = {"customer": stripe_customer_id, "payment_method_types": ["card"]}
        with self._errors(f"create a SetupIntent for {stripe_customer_id}"):
            setup = self._client.v1.setup_intents.create(
                params, {"idempotency_key": idempotency_key}
            )
        return SetupInfo(id=setup.id, client_secret=setup.client_secret)

    def saved_cards(self, stripe_customer_id: str) -> list[SavedCard]:
        with self._errors(f"list the saved cards of {stripe_customer_id}"):
            page = self._client.v1.payment_methods.list(
                {"customer": stripe_customer_id, "type": "card", "limit": 100}
            )
            methods = list(page.auto_paging_iter())
        return [
            SavedCard(
                id=method.id,
                brand=method.card.brand,
                last4=method.card.last4,
                exp_month=method.card.exp_month,
                exp_year=method.card.exp_year,
            )
            for method in methods
        ]

    # ------------------------------------------------------------------ payment intents

    def create_payment_intent(
        self,
        *,
        amount_minor: int,
        currency: str,
        method: PaymentMethodKind | str,
        stripe_customer_id: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> IntentInfo:
        """A PaymentIntent for `amount_minor` of `currency`; the same key returns the same one."""
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
            raise ValueError(
                f"a payment amount is a positive integer of minor units, not {amount_minor!r}"
            )
        if len(currency) != 3 or not currency.isalpha():
            raise ValueError(f"currency must be an ISO 4217 code like USD, not {currency!r}")
        if method not in set(PaymentMethodKind):
            raise ValueError(f"unknown payment method {method!r}; expected card or us_bank_account")
        _require("idempotency_key", idempotency_key)
        params: dict[str, Any] = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "customer": stripe_customer_id,
            # Named, so Stripe offers exactly this method (and no redirect-based ones).
            "payment_method_types": [str(method)],
            "metadata": metadata,
        }
        doing = f"create a {currency.upper()} {amount_minor} PaymentIntent ({idempotency_key})"
        with self._errors(doing):
            intent = self._client.v1.payment_intents.create(
                params, {"idempotency_key": idempotency_key}
            )
        return _intent_info(intent)

    def retrieve_payment_intent(self, payment_intent_id: str) -> IntentInfo:
        with self._errors(f"read PaymentIntent {payment_intent_id}"):
            return _intent_info(self._client.v1.payment_intents.retrieve(payment_intent_id))

    def pay_with_saved_method(
        self, *, payment_intent_id: str, payment_method_id: str, stripe_customer_id: str
    ) -> IntentInfo:
        """Charge the intent with a payment method saved on the payer's own customer.

        Returns the intent's new status: succeeded, processing, or requires_action (the page
        finishes 3-D Secure). A decline raises PaymentDeclined and leaves the intent ready for
        another method; paying an intent already paid returns it unchanged."""
        doing = f"pay PaymentIntent {payment_intent_id} with {payment_method_id}"
        with self._errors(doing):
            method = self._client.v1.payment_methods.retrieve(payment_method_id)
            intent = self._client.v1.payment_intents.retrieve(payment_intent_id)
        if method.customer != stripe_customer_id:
            raise PaymentMethodRefused(
                f"payment method {payment_method_id} is not saved on Stripe customer "
                f"{stripe_customer_id}; nothing was charged"
            )
        if intent.customer != stripe_customer_id:
            raise PaymentMethodRefused(
                f"PaymentIntent {payment_intent_id} is not Stripe customer "
                f"{stripe_customer_id}'s; nothing was charged"
            )
        if intent.status in (IntentStatus.SUCCEEDED, IntentStatus.PROCESSING) or (
            intent.status == IntentStatus.REQUIRES_ACTION
            and intent.payment_method == payment_method_id
        ):
            return _intent_info(intent)  # a second press of "pay": already on its way
        with self._errors(doing):
            if intent.payment_method != payment_method_id:
                self._client.v1.payment_intents.update(
                    payment_intent_id, {"payment_method": payment_method_id}
                )
            intent = self._client.v1.payment_intents.confirm(payment_intent_id)
        return _intent_info(intent)

    def cancel_payment_intent(self, payment_intent_id: str) -> IntentInfo:
        """Cancel an unpaid intent (an abandoned checkout); cancelling twice is harmless."""
        with self._errors(f"cancel PaymentIntent {payment_intent_id}"):
            intent = self._client.v1.payment_intents.retrieve(payment_intent_id)
            if intent.status == IntentStatus.CANCELED:
                return _intent_info(intent)
            return _intent_info(self._client.v1.payment_intents.cancel(payment_intent_id))

    # ------------------------------------------------------------------ errors

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except stripe.CardError as error:
            declined = error.error
            code = (declined and declined.decline_code) or error.code or "card_declined"
            raise PaymentDeclined(code) from None
        except stripe.APIConnectionError:
            raise GatewayUnavailable(
                f"cannot reach Stripe at {self.api_base} to {doing}; try again later"
            ) from None
        except stripe.AuthenticationError:
            raise GatewayError(
                f"Stripe at {self.api_base} refused the secret key while trying to {doing}: "
                "check DUNWISE_STRIPE_SECRET_KEY"
            ) from None
        except stripe.StripeError as error:
            said = self._scrub(error.user_message or str(error) or type(error).__name__)
            status = f"HTTP {error.http_status}" if error.http_status else "error"
            raise GatewayError(f"Stripe could not {doing} ({status}): {said}") from None

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[secret key]") if self._secret else text


def _require(name: str, value: str) -> None:
    if not value or not value.strip():
        raise ValueError(f"{name} must not be empty")
