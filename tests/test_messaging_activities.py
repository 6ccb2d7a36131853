"""send_reminder and send_receipt on a real SQLite ledger with the outbox channels."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import ledger.models  # noqa: F401  (registers the tables)
from activities.delivery import (
    Delivered,
    OutboxEmail,
    OutboxSms,
    OutgoingSms,
    PermanentDeliveryError,
    TwilioSms,
)
from activities.email_message import OutgoingEmail
from activities.messaging import MessagingActivities
from activities.models import ReceiptRequest, ReminderOutcome, ReminderRequest
from ledger.db import make_engine, session_scope
from ledger.models import (
    AuditEvent,
    Customer,
    Invoice,
    InvoiceStatus,
    Message,
    Payment,
    PaymentAllocation,
)
from paylinks import read_pay_token, read_unsubscribe_token
from settings import Settings
from tests.test_messaging_delivery import RecordingHttpServer, Reply, twilio_settings

DUE = date(2026, 3, 13)

NOW = datetime(2026, 3, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        outbox_dir=tmp_path / "outbox",
        company_name="Northwind Traders",
        email_from="billing@northwind.example",
        public_base_url="https://pay.northwind.example",
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    ledger_engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    SQLModel.metadata.create_all(ledger_engine)
    yield ledger_engine
    ledger_engine.dispose()


def add_invoice(
    engine: sa.Engine,
    number: str = "INV-1",
    *,
    status: InvoiceStatus = InvoiceStatus.OPEN,
    balance_minor: int = 123450,
    due_on: date = DUE,
    currency: str = "USD",
    policy_version: int = 1,
    **customer: Any,
) -> None:
    customer_values: dict[str, Any] = {
        "id": "cust-1",
        "name": "Acme Industrial",
        "email": "ap@acme.example",
        "phone": "+12125550100",
        "timezone": "America/New_York",
        **customer,
    }
    with session_scope(engine) as session:
        if session.get(Customer, customer_values["id"]) is None:
            session.add(Customer(**customer_values))
        session.add(
            Invoice(
                number=number,
                customer_id=customer_values["id"],
                currency=currency,
                total_minor=123450,
                balance_minor=balance_minor,
                issued_on=date(2026, 2, 11),
                due_on=due_on,
                status=status,
                policy_name="standard",
                policy_version=policy_version,
            )
        )


def reminder(
    template: str = "overdue_friendly",
    channels: tuple[str, ...] = ("email", "sms"),
    number: str = "INV-1",
    step: int = 2,
    scheduled_for: datetime = datetime(2026, 3, 20, 14, 0, tzinfo=UTC),
) -> ReminderRequest:
    return ReminderRequest(
        invoice_number=number,
        template=template,
        channels=list(channels),
        step_index=step,
        scheduled_for=scheduled_for,
        idempotency_key=f"{number}:step:{step}",
    )


def messages(engine: sa.Engine) -> list[Message]:
    with session_scope(engine) as session:
        return list(session.exec(select(Message).order_by(Message.id)).all())


def statuses(outcome: ReminderOutcome) -> list[tuple[str, str, str | None]]:
    return [(result.channel, result.status, result.reason) for result in outcome.results]


def eml_files(settings: Settings) -> list[Path]:
    folder = settings.effective_outbox_dir / "email"
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def sms_lines(settings: Settings) -> list[dict[str, Any]]:
    path = settings.effective_outbox_dir / "sms.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Counting:
    """Wraps a channel: counts deliveries and can fail before or after delivering."""

    def __init__(self, inner: Any, fail_before: int = 0, fail_after: int = 0) -> None:
        self.inner = inner
        self.calls = 0
        self.fail_before = fail_before
        self.fail_after = fail_after

    def deliver(self, message: Any) -> Delivered:
        self.calls += 1
        if self.fail_before:
            self.fail_before -= 1
            raise ConnectionError("provider unreachable")
        delivered = self.inner.deliver(message)
        if self.fail_after:
            self.fail_after -= 1
            raise ConnectionError("connection lost after the provider accepted")
        return delivered


class Refusing:
    def __init__(self) -> None:
        self.calls = 0

    def deliver(self, message: OutgoingEmail | OutgoingSms) -> Delivered:
        self.calls += 1
        raise PermanentDeliveryError("provider refused: 550 no such mailbox")


def test_reminder_goes_out_on_every_channel(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    outcome = MessagingActivities(engine, settings).send_reminder(reminder())

    assert statuses(outcome) == [("email", "sent", None), ("sms", "sent", None)]
    assert [result.recipient for result in outcome.results] == ["ap@acme.example", "+12125550100"]
    rows = messages(engine)
    assert [(row.idempotency_key, row.channel, row.status) for row in rows] == [
        ("INV-1:step:2:email", "email", "sent"),
        ("INV-1:step:2:sms", "sms", "sent"),
    ]
    assert rows[0].subject == "Invoice INV-1 is 7 days overdue"
    assert rows[0].template == "overdue_friendly"

    [path] = eml_files(settings)
    assert path.name == rows[0].provider_id
    eml = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert eml["To"] == "ap@acme.example"
    assert eml["X-Dunwise-Idempotency-Key"] == "INV-1:step:2:email"
    text = eml.get_body(("plain",)).get_content()
    assert "$1,234.50" in text and "March 13, 2026" in text and "7 days overdue" in text

    [sms] = sms_lines(settings)
    assert sms["to"] == "+12125550100"
    assert sms["idempotency_key"] == "INV-1:step:2:sms"
    assert "Reply STOP to opt out" in sms["body"]


def test_pay_link_is_scoped_to_the_customer_and_invoice(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine)
    MessagingActivities(engine, settings).send_reminder(reminder(channels=("sms",)))
    [sms] = sms_lines(settings)
    link = next(word for word in sms["body"].split() if "/pay/" in word)
    assert link.startswith("https://pay.northwind.example/pay/")
    token = read_pay_token(settings, link.rsplit("/", 1)[1])
    assert (token.customer_id, token.invoice_numbers) == ("cust-1", ["INV-1"])


def test_email_carries_a_working_unsubscribe_link(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    MessagingActivities(engine, settings).send_reminder(reminder(channels=("email",)))
    [path] = eml_files(settings)
    eml = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    link = eml["List-Unsubscribe"].strip("<>")
    # Raw, not RFC 2047-encoded: mail clients read the link from the header as written.
    assert f"List-Unsubscribe: <{link}>".encode() in path.read_bytes()
    assert eml["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # RFC 8058
    token = read_unsubscribe_token(settings, link.rsplit("/", 1)[1])
    assert (token.customer_id, token.channel) == ("cust-1", "email")
    assert link in eml.get_body(("plain",)).get_content()


def test_days_past_due_counts_in_the_customer_timezone(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine)
    # 02:00 UTC on the 14th is still the 13th, the due date, in New York.
    early = reminder(template="due_today", scheduled_for=datetime(2026, 3, 14, 2, tzinfo=UTC))
    MessagingActivities(engine, settings).send_reminder(early)
    [row, _] = messages(engine)
    assert row.subject == "Invoice INV-1 from Northwind Traders is due today"
    [path] = eml_files(settings)
    eml = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    text = eml.get_body(("plain",)).get_content()
    assert "due today, March 13, 2026" in text
    assert "Days overdue" not in text


def test_a_retry_returns_the_recorded_result_and_sends_nothing(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine)
    email_channel, sms_channel = Counting(OutboxEmail(settings)), Counting(OutboxSms(settings))
    activities = MessagingActivities(engine, settings, email=email_channel, sms=sms_channel)

    first = activities.send_reminder(reminder())
    second = activities.send_reminder(reminder())

    assert first == second
    assert (email_channel.calls, sms_channel.calls) == (1, 1)
    assert len(messages(engine)) == 2
    assert len(eml_files(settings)) == 1
    assert len(sms_lines(settings)) == 1


def test_the_row_is_committed_before_delivery(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    seen: list[str] = []

    class Inspecting:
        def deliver(self, message: OutgoingEmail) -> Delivered:
            with session_scope(engine) as session:
                row = session.exec(
                    select(Message).where(Message.idempotency_key == message.idempotency_key)
                ).one()
                seen.append(row.status)
            return Delivered(provider_id="x")

    MessagingActivities(engine, settings, email=Inspecting()).send_reminder(
        reminder(channels=("email",))
    )
    assert seen == ["sending"]
    assert messages(engine)[0].status == "sent"


def test_failure_before_delivery_is_retried_once_delivered(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine)
    email_channel = Counting(OutboxEmail(settings), fail_before=1)
    activities = MessagingActivities(engine, settings, email=email_channel)

    with pytest.raises(ConnectionError):
        activities.send_reminder(reminder(channels=("email",)))
    assert [row.status for row in messages(engine)] == ["sending"]
    assert eml_files(settings) == []

    outcome = activities.send_reminder(reminder(channels=("email",)))
    assert statuses(outcome) == [("email", "sent", None)]
    assert [row.status for row in messages(engine)] == ["sent"]
    assert len(eml_files(settings)) == 1


def test_crash_after_delivery_does_not_duplicate_the_message(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine)
    email_channel = Counting(OutboxEmail(settings), fail_after=1)
    sms_channel = Counting(OutboxSms(settings), fail_after=1)
    activities = MessagingActivities(engine, settings, email=email_channel, sms=sms_channel)

    with pytest.raises(ConnectionError):
        activities.send_reminder(reminder())  # email delivered, then the attempt died
    with pytest.raises(ConnectionError):
        activities.send_reminder(reminder())  # email marked sent; sms delivered, then died
    outcome = activities.send_reminder(reminder())

    assert statuses(outcome) == [("email", "sent", None), ("sms", "sent", None)]
    assert len(eml_files(settings)) == 1
    assert len(sms_lines(settings)) == 1


def test_only_the_failed_channel_is_retried(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    email_channel = Counting(OutboxEmail(settings))
    sms_channel = Counting(OutboxSms(settings), fail_before=1)
    activities = MessagingActivities(engine, settings, email=email_channel, sms=sms_channel)

    with pytest.raises(ConnectionError):
        activities.send_reminder(reminder())
    activities.send_reminder(reminder())
    assert (email_channel.calls, sms_channel.calls) == (1, 2)


@pytest.mark.parametrize(
    "status",
    [
        InvoiceStatus.PAID,
        InvoiceStatus.DISPUTED,
        InvoiceStatus.PAUSED,
        InvoiceStatus.VOID,
        InvoiceStatus.WRITTEN_OFF,
        InvoiceStatus.CLOSED,
    ],
)
def test_reminder_for_an_invoice_that_is_not_open_is_suppressed(
    engine: sa.Engine, settings: Settings, status: InvoiceStatus
) -> None:
    add_invoice(engine, status=status)
    outcome = MessagingActivities(engine, settings).send_reminder(reminder())

    reason = f"invoice is {status.value}"
    assert statuses(outcome) == [("email", "suppressed", reason), ("sms", "suppressed", reason)]
    assert [(row.status, row.reason) for row in messages(engine)] == [("suppressed", reason)] * 2
    assert eml_files(settings) == [] and sms_lines(settings) == []


def test_the_ledger_is_read_just_before_sending(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    activities = MessagingActivities(engine, settings)
    activities.send_reminder(reminder(step=1, channels=("email",)))
    with session_scope(engine) as session:
        invoice = session.exec(select(Invoice)).one()
        invoice.status, invoice.balance_minor = InvoiceStatus.PAID, 0
        session.add(invoice)
    outcome = activities.send_reminder(reminder(step=2, channels=("email",)))
    assert statuses(outcome) == [("email", "suppressed", "invoice is paid")]
    assert len(eml_files(settings)) == 1


def test_open_invoice_with_nothing_due_is_suppressed(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine, balance_minor=0)
    outcome = MessagingActivities(engine, settings).send_reminder(reminder())
    assert {result.reason for result in outcome.results} == {"nothing is due on this invoice"}


def test_opted_out_channel_is_suppressed_and_the_other_sent(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, sms_opt_out=True)
    outcome = MessagingActivities(engine, settings).send_reminder(reminder())
    assert statuses(outcome) == [
        ("email", "sent", None),
        ("sms", "suppressed", "customer opted out of sms"),
    ]
    assert sms_lines(settings) == []


def test_email_opt_out_is_respected(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine, email_opt_out=True)
    outcome = MessagingActivities(engine, settings).send_reminder(reminder())
    assert statuses(outcome)[0] == ("email", "suppressed", "customer opted out of email")
    assert eml_files(settings) == []


def test_missing_address_is_suppressed(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine, email=None, phone=None)
    outcome = MessagingActivities(engine, settings).send_reminder(reminder())
    assert statuses(outcome) == [
        ("email", "suppressed", "no email address on file"),
        ("sms", "suppressed", "no phone number on file"),
    ]


def test_permanent_refusal_is_recorded_and_not_retried(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine)
    refusing = Refusing()
    activities = MessagingActivities(engine, settings, email=refusing)
    first = activities.send_reminder(reminder(channels=("email",)))
    second = activities.send_reminder(reminder(channels=("email",)))

    assert statuses(first) == [("email", "failed", "provider refused: 550 no such mailbox")]
    assert second == first
    assert refusing.calls == 1
    assert messages(engine)[0].status == "failed"


def test_unknown_template_fails_for_good_naming_it(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    with pytest.raises(ApplicationError, match="'gentle_nudge'") as caught:
        MessagingActivities(engine, settings).send_reminder(reminder(template="gentle_nudge"))
    assert caught.value.non_retryable
    assert messages(engine) == []


def test_unknown_channel_fails_for_good_before_sending(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine)
    with pytest.raises(ApplicationError, match="letter") as caught:
        MessagingActivities(engine, settings).send_reminder(reminder(channels=("email", "letter")))
    assert caught.value.non_retryable
    assert messages(engine) == [] and eml_files(settings) == []


def test_unknown_invoice_fails_for_good(engine: sa.Engine, settings: Settings) -> None:
    with pytest.raises(ApplicationError, match="INV-404") as caught:
        MessagingActivities(engine, settings).send_reminder(reminder(number="INV-404"))
    assert caught.value.non_retryable and caught.value.type == "InvoiceNotFound"
    assert messages(engine) == []


def test_runs_as_a_temporal_activity(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    activities = MessagingActivities(engine, settings)
    outcome = ActivityEnvironment().run(activities.send_reminder, reminder())
    assert statuses(outcome) == [("email", "sent", None), ("sms", "sent", None)]


# --------------------------------------------------------------------------- receipts


def pay(engine: sa.Engine, amount_minor: int, key: str, reference: str | None = None) -> None:
    with session_scope(engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == "INV-1")).one()
        payment = Payment(
            customer_id=invoice.customer_id,
            currency="USD",
            amount_minor=amount_minor,
            method="card",
            reference=reference,
            idempotency_key=key,
            received_at=datetime(2026, 3, 18, 15, tzinfo=UTC),
        )
        session.add(payment)
        session.flush()
        assert payment.id is not None and invoice.id is not None
        session.add(
            PaymentAllocation(
                payment_id=payment.id, invoice_id=invoice.id, amount_minor=amount_minor
            )
        )
        invoice.balance_minor -= amount_minor
        if invoice.balance_minor == 0:
            invoice.status = InvoiceStatus.PAID
        session.add(invoice)


def test_receipt_is_sent_for_a_paid_invoice_once(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    pay(engine, 23450, "pay-1", reference="ch_123")
    pay(engine, 100000, "pay-2")
    activities = MessagingActivities(engine, settings)

    receipt = ReceiptRequest(invoice_number="INV-1", paid_at=NOW, idempotency_key="INV-1:receipt")
    first = activities.send_receipt(receipt)
    second = activities.send_receipt(receipt)

    assert statuses(first) == [("email", "sent", None)] == statuses(second)
    [row] = messages(engine)
    assert (row.idempotency_key, row.template) == ("INV-1:receipt:email", "receipt")
    assert row.subject == "Invoice INV-1 is paid in full, thank you"
    [path] = eml_files(settings)
    text = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    body = text.get_body(("plain",)).get_content()
    assert "$234.50" in body and "$1,000.00" in body and "ch_123" in body
    assert sms_lines(settings) == []


def test_a_receipt_goes_out_to_a_customer_who_opted_out_of_reminders(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, email_opt_out=True)
    pay(engine, 123450, "pay-1")
    outcome = MessagingActivities(engine, settings).send_receipt(
        ReceiptRequest(invoice_number="INV-1", paid_at=NOW, idempotency_key="INV-1:receipt")
    )
    assert statuses(outcome) == [("email", "sent", None)]


def test_receipt_without_payments_is_suppressed(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine)
    outcome = MessagingActivities(engine, settings).send_receipt(
        ReceiptRequest(invoice_number="INV-1", paid_at=NOW, idempotency_key="INV-1:receipt")
    )
    assert statuses(outcome) == [("email", "suppressed", "no payments recorded for this invoice")]


def test_a_stop_reply_at_twilio_opts_the_customer_out_of_sms(
    engine: sa.Engine, settings: Settings
) -> None:
    unsubscribed = Reply(
        400,
        json.dumps(
            {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}
        ).encode(),
        {"Content-Type": "application/json"},
    )
    add_invoice(engine)
    with RecordingHttpServer(unsubscribed) as server:
        twilio = TwilioSms(twilio_settings(settings, server.url))
        activities = MessagingActivities(engine, settings, sms=twilio)
        first = activities.send_reminder(reminder(channels=("sms",)))
        later = activities.send_reminder(reminder(channels=("sms",), step=3))
        assert len(server.requests) == 1  # the later reminder never reached Twilio

    [(channel, status, reason)] = statuses(first)
    assert (channel, status) == ("sms", "suppressed")
    assert reason is not None and "replied STOP (code 21610)" in reason
    assert statuses(later) == [("sms", "suppressed", "customer opted out of sms")]
    with session_scope(engine) as session:
        assert session.get(Customer, "cust-1").sms_opt_out  # type: ignore[union-attr]
        [audit] = session.exec(select(AuditEvent).where(AuditEvent.action == "opted_out")).all()
        assert audit.actor == "provider"


@pytest.mark.parametrize(
    ("utc_hour", "quiet_hours", "sms"),
    [
        (2, "21:00-08:00", ("suppressed", "quiet hours for SMS (21:00-08:00 in America/New_York)")),
        (14, "21:00-08:00", ("sent", None)),  # 10:00 in New York
        (2, "", ("sent", None)),  # no quiet hours
        (
            17,
            "12:00-14:00",
            ("suppressed", "quiet hours for SMS (12:00-14:00 in America/New_York)"),
        ),
    ],
)
def test_no_sms_goes_out_in_the_customers_quiet_hours(
    engine: sa.Engine, settings: Settings, utc_hour: int, quiet_hours: str, sms: tuple
) -> None:
    add_invoice(engine)
    quiet = settings.model_copy(update={"sms_quiet_hours": quiet_hours})
    at_night = reminder(scheduled_for=datetime(2026, 3, 20, utc_hour, 0, tzinfo=UTC))
    outcome = MessagingActivities(engine, quiet).send_reminder(at_night)
    assert statuses(outcome) == [("email", "sent", None), ("sms", *sms)]
