"""Temporal activity that clears a paid (or closed) invoice in the ERP, once per key.

Without an ERP URL the document goes to a JSON-lines journal file. With one it is POSTed
with an Idempotency-Key and an HMAC-SHA256 signature of the raw body; the ERP is expected
to drop a repeated key, which covers a crash between its 2xx and our ErpPosting row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.currency import to_major
from activities.files import append_json_line_once
from activities.ledger import invoice_and_customer
from activities.models import ErpClearingRequest, ErpClearingResult
from ledger.books import ALLOCATIONS
from ledger.db import session_scope
from ledger.models import (
    Adjustment,
    Customer,
    CustomerCredit,
    ErpPosting,
    Invoice,
)
from ledger.operations import credit_key
from settings import Settings
from vocabulary import AdjustmentKind

IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-Dunwise-Signature"
TIMESTAMP_HEADER = "X-Dunwise-Timestamp"
# Client errors that may pass on their own: timeout, conflict (e.g. still processing the
# same key), rate limit. Every other 4xx means the ERP will never accept this document.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 429})


# How old a signed request may be when the ERP checks it: replays beyond this are refused.
SIGNATURE_TOLERANCE_SECONDS = 300


def sign_erp_body(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Dunwise-Signature value: "sha256=" and the hex HMAC-SHA256 of
    "<X-Dunwise-Timestamp>.<raw body>", so the timestamp cannot be changed to replay it."""
    signed = timestamp.encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_erp_signature(
    secret: str,
    body: bytes,
    header: str | None,
    timestamp: str | None,
    *,
    now: float | None = None,
    tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """For the receiving side: do ``header`` and ``timestamp`` sign exactly these bytes with
    this secret, and is the timestamp (Unix seconds) recent?"""
    if not header or not header.startswith("sha256=") or not timestamp:
        return False
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign_erp_body(secret, timestamp, body), header.strip())


def encode_document(document: dict[str, Any]) -> bytes:
    """Canonical JSON, so a retry sends the same bytes and the same signature."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


# Built once: every cleared invoice runs them.
_ADJUSTMENTS = (
    select(Adjustment)
    .where(Adjustment.invoice_id == sa.bindparam("invoice_id"))
    .order_by(Adjustment.id)
)
_POSTED = select(ErpPosting).where(ErpPosting.idempotency_key == sa.bindparam("key"))
# The credit the invoice's payments and credit notes left over.
_CREDITS = (
    select(CustomerCredit)
    .where(
        sa.or_(
            CustomerCredit.payment_id.in_(  # type: ignore[union-attr]
                sa.bindparam("payment_ids", expanding=True)
            ),
            CustomerCredit.idempotency_key.in_(  # type: ignore[attr-defined]
                sa.bindparam("keys", expanding=True)
            ),
        )
    )
    .order_by(CustomerCredit.id)
)


def build_clearing_document(
    session: Session, invoice: Invoice, customer: Customer, req: ErpClearingRequest
) -> dict[str, Any]:
    currency = invoice.currency

    def money(amount_minor: int, code: str = currency) -> str:
        return str(to_major(amount_minor, code))

    allocations = session.exec(ALLOCATIONS, params={"invoice_id": invoice.id}).all()
    payment_ids = [payment.id for payment, _ in allocations]
    adjustments = session.exec(_ADJUSTMENTS, params={"invoice_id": invoice.id}).all()
    # Overpayments on this invoice's payments, and credit notes beyond its balance, became
    # customer credit.
    credit_note_keys = [
        credit_key(a.idempotency_key) for a in adjustments if a.kind == AdjustmentKind.CREDIT
    ]
    credits = (
        session.exec(_CREDITS, params={"payment_ids": payment_ids, "keys": credit_note_keys}).all()
        if payment_ids or credit_note_keys
        else []
    )
    return {
        "event": "invoice.cleared",
        "idempotency_key": req.idempotency_key,
        "invoice_number": invoice.number,
        "customer": {
            "id": invoice.customer_id,
            "name": customer.name,
        },
        "currency": currency,
        "total_minor": invoice.total_minor,
        "total": money(invoice.total_minor),
        "balance_minor": invoice.balance_minor,
        "balance": money(invoice.balance_minor),
        "status": str(invoice.status),
        "issued_on": invoice.issued_on.isoformat(),
        "due_on": invoice.due_on.isoformat(),
        "cleared_on": req.cleared_on.isoformat(),
        "payments": [
            {
                "payment_id": payment.id,
                "method": payment.method,
                "reference": payment.reference,
                "status": payment.status,
                "received_at": payment.received_at.isoformat(),
                "currency": payment.currency,
                "payment_amount_minor": payment.amount_minor,
                "allocated_minor": allocation.amount_minor,
                "allocated": money(allocation.amount_minor, payment.currency),
                "reason": payment.reason,
            }
            for payment, allocation in allocations
        ],
        "adjustments": [
            {
                "kind": adjustment.kind,
                "amount_minor": adjustment.amount_minor,
                "amount": money(adjustment.amount_minor),
                "reason": adjustment.reason,
                "created_at": adjustment.created_at.isoformat(),
            }
            for adjustment in adjustments
        ],
        "credits": [
            {
                "source": credit.source,
                "payment_id": credit.payment_id,
                "currency": credit.currency,
                "amount_minor": credit.amount_minor,
                "amount": money(credit.amount_minor, credit.currency),
                "created_at": credit.created_at.isoformat(),
            }
            for credit in credits
        ],
    }


class ErpActivities:
    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    @property
    def target(self) -> str:
        return self._settings.erp_url or str(self._settings.effective_erp_journal)

    @activity.defn
    def clear_in_erp(self, req: ErpClearingRequest) -> ErpClearingResult:
        try:
            if self._settings.erp_url:
                return self._clear_over_http(self._settings.erp_url, req)
            return self._clear_in_journal(req)
        except IntegrityError:
            # A concurrent attempt recorded the posting first.
            return ErpClearingResult(target=self.target, already_posted=True)

    def _clear_in_journal(self, req: ErpClearingRequest) -> ErpClearingResult:
        """Read, write the journal line and record the posting in one transaction: the
        journal is idempotent by key itself, so a crash before the commit never leaves the
        invoice unposted or posted twice."""
        with session_scope(self._engine) as session:
            unposted = self._unposted(session, req)
            if isinstance(unposted, ErpClearingResult):
                return unposted
            invoice_id, document = unposted
            written_now = append_json_line_once(
                self._settings.effective_erp_journal,
                document,
                key_field="idempotency_key",
                durable=self._settings.durable_writes,
            )
            session.add(self._posting(req, invoice_id, document))
        return ErpClearingResult(target=self.target, already_posted=not written_now)

    def _clear_over_http(self, url: str, req: ErpClearingRequest) -> ErpClearingResult:
        """The ledger is not held while the ERP answers: read, post, then record."""
        with session_scope(self._engine) as session:
            unposted = self._unposted(session, req)
        if isinstance(unposted, ErpClearingResult):
            return unposted
        invoice_id, document = unposted
        self._post(url, document, req)
        with session_scope(self._engine) as session:
            session.add(self._posting(req, invoice_id, document))
        return ErpClearingResult(target=self.target)

    def _unposted(
        self, session: Session, req: ErpClearingRequest
    ) -> ErpClearingResult | tuple[int, dict[str, Any]]:
        """The invoice's id and clearing document, or the result of the posting already made."""
        posted = session.exec(_POSTED, params={"key": req.idempotency_key}).first()
        if posted is not None:
            return ErpClearingResult(target=posted.target, already_posted=True)
        invoice, customer = invoice_and_customer(session, req.invoice_number)
        return invoice.id, build_clearing_document(session, invoice, customer, req)

    def _posting(
        self, req: ErpClearingRequest, invoice_id: int, document: dict[str, Any]
    ) -> ErpPosting:
        return ErpPosting(
            idempotency_key=req.idempotency_key,
            invoice_id=invoice_id,
            target=self.target[:500],
            document=encode_document(document).decode("utf-8"),
        )

    def _post(self, url: str, document: dict[str, Any], req: ErpClearingRequest) -> None:
        secret = self._settings.erp_secret
        if secret is None:
            raise ApplicationError(
                "DUNWISE_ERP_SECRET is required when DUNWISE_ERP_URL is set: "
                "the ERP must be able to verify what dunwise posts",
                type="ErpNotConfigured",
                non_retryable=True,
            )
        body = encode_document(document)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: req.idempotency_key,
            SIGNATURE_HEADER: sign_erp_body(secret.get_secret_value(), timestamp, body),
            TIMESTAMP_HEADER: timestamp,
        }
        with httpx.Client(timeout=self._settings.erp_timeout_seconds) as client:
            response = client.post(url, content=body, headers=headers)
        if response.is_success:
            return
        detail = f"HTTP {response.status_code}: {response.text[:300]}"
        if (
            400 <= response.status_code < 500
            and response.status_code not in RETRYABLE_CLIENT_STATUSES
        ):
            raise ApplicationError(
                f"the ERP refused the clearing of invoice {req.invoice_number} "
                f"(key {req.idempotency_key}): {detail}; fix the ERP side, then clear it again",
                type="ErpRejected",
                non_retryable=True,
            )
        raise ApplicationError(
            f"the ERP could not clear invoice {req.invoice_number} yet: {detail}",
            type="ErpUnavailable",
        )
