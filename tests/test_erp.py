"""clear_in_erp on a real SQLite ledger: journal file by default, signed webhook with a URL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import SQLModel, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import ledger.models  # noqa: F401  (registers the tables)
from activities.erp import (
    ErpActivities,
    encode_document,
    sign_erp_body,
    verify_erp_signature,
)
from activities.models import ErpClearingRequest
from ledger.db import make_engine, session_scope
from ledger.models import (
    Adjustment,
    Customer,
    CustomerCredit,
    ErpPosting,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
)
from settings import Settings
from tests.test_messaging_delivery import RecordingHttpServer, Reply

SECRET = "erp-shared-secret"
REQUEST = ErpClearingRequest(
    invoice_number="INV-7", cleared_on=date(2026, 4, 2), idempotency_key="INV-7:erp-clearing"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, erp_secret=SecretStr(SECRET))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    ledger_engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    SQLModel.metadata.create_all(ledger_engine)
    _paid_invoice(ledger_engine)
    yield ledger_engine
    ledger_engine.dispose()


def _paid_invoice(engine: sa.Engine) -> None:
    """INV-7: 1,000.00 total, a 50.00 credit note, 300.00 by ACH, then 700.00 by card of which
    50.00 was too much and became customer credit."""
    with session_scope(engine) as session:
        session.add(Customer(id="cust-7", name="Globex Corporation", email="ap@globex.example"))
        invoice = Invoice(
            number="INV-7",
            customer_id="cust-7",
            currency="USD",
            total_minor=100000,
            balance_minor=0,
            issued_on=date(2026, 2, 1),
            due_on=date(2026, 3, 3),
            status=InvoiceStatus.PAID,
            policy_name="standard",
            policy_version=3,
        )
        session.add(invoice)
        session.flush()
        assert invoice.id is not None
        session.add(
            Adjustment(
                invoice_id=invoice.id,
                kind="credit",
                amount_minor=-5000,
                reason="damaged item",
                idempotency_key="INV-7:credit:1",
            )
        )
        ach = Payment(
            customer_id="cust-7",
            currency="USD",
            amount_minor=30000,
            method="ach",
            reference="ach_1",
            reason="first instalment",
            idempotency_key="pay-ach-1",
            received_at=datetime(2026, 3, 10, 12, tzinfo=UTC),
        )
        card = Payment(
            customer_id="cust-7",
            currency="USD",
            amount_minor=70000,
            method="card",
            reference="ch_2",
            idempotency_key="pay-card-2",
            received_at=datetime(2026, 4, 1, 9, tzinfo=UTC),
        )
        session.add_all([ach, card])
        session.flush()
        assert ach.id is not None and card.id is not None
        session.add_all(
            [
                PaymentAllocation(payment_id=ach.id, invoice_id=invoice.id, amount_minor=30000),
                PaymentAllocation(payment_id=card.id, invoice_id=invoice.id, amount_minor=65000),
                CustomerCredit(
                    customer_id="cust-7",
                    currency="USD",
                    amount_minor=5000,
                    source="overpayment",
                    payment_id=card.id,
                    idempotency_key="pay-card-2:credit",
                ),
            ]
        )


def postings(engine: sa.Engine) -> list[ErpPosting]:
    with session_scope(engine) as session:
        return list(session.exec(select(ErpPosting)).all())


def journal(settings: Settings) -> list[dict]:
    path = settings.effective_erp_journal
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- journal mode


def test_journal_gets_exactly_one_line_for_two_calls(engine: sa.Engine, settings: Settings) -> None:
    activities = ErpActivities(engine, settings)
    first = activities.clear_in_erp(REQUEST)
    second = activities.clear_in_erp(REQUEST)

    target = str(settings.effective_erp_journal)
    assert (first.target, first.already_posted) == (target, False)
    assert (second.target, second.already_posted) == (target, True)
    [line] = journal(settings)
    assert line["idempotency_key"] == "INV-7:erp-clearing"
    [posting] = postings(engine)
    assert json.loads(posting.document) == line


def test_journal_is_not_written_twice_after_a_crash_before_recording(
    engine: sa.Engine, settings: Settings
) -> None:
    activities = ErpActivities(engine, settings)
    activities.clear_in_erp(REQUEST)
    with session_scope(engine) as session:  # as if the attempt died before its ErpPosting
        session.delete(session.exec(select(ErpPosting)).one())

    again = activities.clear_in_erp(REQUEST)
    assert again.already_posted
    assert len(journal(settings)) == 1
    assert len(postings(engine)) == 1


def test_clearing_document_describes_the_money(engine: sa.Engine, settings: Settings) -> None:
    ErpActivities(engine, settings).clear_in_erp(REQUEST)
    [document] = journal(settings)

    assert document["invoice_number"] == "INV-7"
    assert document["customer"] == {"id": "cust-7", "name": "Globex Corporation"}
    assert (document["currency"], document["total_minor"], document["total"]) == (
        "USD",
        100000,
        "1000.00",
    )
    assert (document["balance_minor"], document["status"]) == (0, "paid")
    assert document["cleared_on"] == "2026-04-02"
    assert [(p["method"], p["allocated_minor"], p["allocated"]) for p in document["payments"]] == [
        ("ach", 30000, "300.00"),
        ("card", 65000, "650.00"),
    ]
    assert document["payments"][1]["payment_amount_minor"] == 70000
    assert [(a["kind"], a["amount"]) for a in document["adjustments"]] == [("credit", "-50.00")]
    assert [(c["source"], c["amount"]) for c in document["credits"]] == [("overpayment", "50.00")]
    allocated = sum(p["allocated_minor"] for p in document["payments"])
    adjusted = sum(a["amount_minor"] for a in document["adjustments"])
    assert document["total_minor"] + adjusted - allocated == document["balance_minor"]


def test_unknown_invoice_fails_for_good(engine: sa.Engine, settings: Settings) -> None:
    request = REQUEST.model_copy(update={"invoice_number": "INV-404"})
    with pytest.raises(ApplicationError, match="INV-404") as caught:
        ErpActivities(engine, settings).clear_in_erp(request)
    assert caught.value.non_retryable


def test_runs_as_a_temporal_activity(engine: sa.Engine, settings: Settings) -> None:
    result = ActivityEnvironment().run(ErpActivities(engine, settings).clear_in_erp, REQUEST)
    assert not result.already_posted


# --------------------------------------------------------------------------- webhook mode


def webhook_settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"erp_url": f"{url}/erp/clearings"})


def test_webhook_is_signed_and_carries_the_idempotency_key(
    engine: sa.Engine, settings: Settings
) -> None:
    with RecordingHttpServer(Reply(201, b'{"ok":true}')) as server:
        configured = webhook_settings(settings, server.url)
        result = ErpActivities(engine, configured).clear_in_erp(REQUEST)

    assert (result.target, result.already_posted) == (configured.erp_url, False)
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/erp/clearings")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "INV-7:erp-clearing"
    assert verify_erp_signature(
        SECRET,
        request.body,
        request.headers["x-dunwise-signature"],
        request.headers["x-dunwise-timestamp"],
    )
    assert abs(int(request.headers["x-dunwise-timestamp"]) - time.time()) < 60
    assert request.json()["invoice_number"] == "INV-7"
    [posting] = postings(engine)
    assert posting.target == configured.erp_url
    assert posting.document.encode() == request.body
    assert not settings.effective_erp_journal.exists()


def test_server_error_then_success_posts_once(engine: sa.Engine, settings: Settings) -> None:
    with RecordingHttpServer(Reply(500, b"database is down"), Reply(200)) as server:
        activities = ErpActivities(engine, webhook_settings(settings, server.url))
        with pytest.raises(ApplicationError, match="500") as caught:
            activities.clear_in_erp(REQUEST)
        assert not caught.value.non_retryable
        assert postings(engine) == []

        activities.clear_in_erp(REQUEST)
        again = activities.clear_in_erp(REQUEST)

    assert again.already_posted
    assert len(server.requests) == 2  # the third call never reached the ERP
    first, second = server.requests
    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert len(postings(engine)) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_error_fails_for_good(engine: sa.Engine, settings: Settings, status: int) -> None:
    with RecordingHttpServer(Reply(status, b'{"error":"unknown customer cust-7"}')) as server:
        activities = ErpActivities(engine, webhook_settings(settings, server.url))
        with pytest.raises(ApplicationError, match=f"HTTP {status}") as caught:
            activities.clear_in_erp(REQUEST)
    assert caught.value.non_retryable
    assert "unknown customer cust-7" in str(caught.value)
    assert postings(engine) == []


@pytest.mark.parametrize("status", [408, 409, 429, 502, 503])
def test_transient_errors_are_retried(engine: sa.Engine, settings: Settings, status: int) -> None:
    with RecordingHttpServer(Reply(status)) as server:
        activities = ErpActivities(engine, webhook_settings(settings, server.url))
        with pytest.raises(ApplicationError) as caught:
            activities.clear_in_erp(REQUEST)
    assert not caught.value.non_retryable


def test_unreachable_erp_is_retried(engine: sa.Engine, settings: Settings) -> None:
    with RecordingHttpServer() as server:
        url = server.url
    activities = ErpActivities(engine, settings.model_copy(update={"erp_url": url}))
    with pytest.raises(httpx.ConnectError):
        activities.clear_in_erp(REQUEST)
    assert postings(engine) == []


def test_webhook_without_a_secret_is_refused(engine: sa.Engine, tmp_path: Path) -> None:
    unsigned = Settings(data_dir=tmp_path, erp_url="http://127.0.0.1:9/erp")
    with pytest.raises(ApplicationError, match="ERP_SECRET") as caught:
        ErpActivities(engine, unsigned).clear_in_erp(REQUEST)
    assert caught.value.non_retryable


# --------------------------------------------------------------------------- signatures


def test_signature_verification() -> None:
    body = encode_document({"invoice_number": "INV-7", "total_minor": 100000})
    sent_at = "1790000000"
    header = sign_erp_body(SECRET, sent_at, body)
    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64

    def verify(secret=SECRET, body=body, header=header, timestamp=sent_at, now=1790000060):
        return verify_erp_signature(secret, body, header, timestamp, now=now)

    assert verify()
    assert not verify(secret="other-secret")
    assert not verify(body=body.replace(b"100000", b"900000"))
    assert not verify(header=header.removeprefix("sha256="))
    assert not verify(header=None)
    assert not verify(header="")
    # The timestamp is signed: a captured request cannot be replayed later as new.
    assert not verify(timestamp="1790000050")
    assert not verify(timestamp=None)
    assert not verify(timestamp="soon")
    assert not verify(now=1790000000 + 301)  # older than five minutes
    assert verify(now=1790000000 + 300)
