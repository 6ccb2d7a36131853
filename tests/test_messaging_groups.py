"""Several invoices of one customer due the same day get one reminder, on SQLite and PostgreSQL.

Each invoice's send_reminder runs in its own thread, as the worker's activity executor would
run them when the invoices' timers fire together.
"""

from __future__ import annotations

import email
import email.policy
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.exceptions import ApplicationError

from activities.delivery import OutboxEmail
from activities.messaging import MessagingActivities
from activities.models import ChannelResult, ReminderOutcome
from ledger.models import InvoiceStatus
from paylinks import read_pay_token
from settings import Settings
from tests.test_messaging_activities import (
    Counting,
    add_invoice,
    eml_files,
    messages,
    reminder,
    sms_lines,
    statuses,
)
from tests.test_messaging_activities import settings as settings  # noqa: F401  (fixture)


def send_together(
    activities: MessagingActivities, numbers: list[str], **kwargs
) -> dict[str, ReminderOutcome | BaseException]:
    """Run each invoice's reminder at once; keep what each returned or raised."""
    with ThreadPoolExecutor(max_workers=len(numbers)) as pool:
        futures = {
            number: pool.submit(activities.send_reminder, reminder(number=number, **kwargs))
            for number in numbers
        }
    return {number: future.exception() or future.result() for number, future in futures.items()}


def only(outcome: ReminderOutcome | BaseException) -> ChannelResult:
    assert isinstance(outcome, ReminderOutcome), outcome
    [result] = outcome.results
    return result


def eml_text(path: Path) -> str:
    eml = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return eml["Subject"] + "\n" + eml.get_body(("plain",)).get_content()


def test_invoices_due_the_same_day_share_one_message(engine: sa.Engine, settings: Settings) -> None:
    for number in ("INV-1", "INV-2", "INV-3"):
        add_invoice(engine, number, balance_minor=100_00)
    outcomes = send_together(MessagingActivities(engine, settings), ["INV-3", "INV-1", "INV-2"])

    assert statuses(outcomes["INV-1"]) == [  # type: ignore[arg-type]
        ("email", "sent", "in one message with INV-2, INV-3"),
        ("sms", "sent", "in one message with INV-2, INV-3"),
    ]
    assert statuses(outcomes["INV-2"])[0] == ("email", "sent", "in one message with INV-1, INV-3")  # type: ignore[arg-type]
    [path] = eml_files(settings)
    text = eml_text(path)
    assert text.startswith("Invoices INV-1, INV-2 and INV-3 are 7 days overdue")
    assert "invoices INV-1, INV-2 and INV-3 for $300.00 were due on March 13, 2026" in text
    for number in ("INV-1", "INV-2", "INV-3"):
        assert f"Invoice {number}: $100.00" in text
    assert "Total due:    $300.00" in text

    [sms] = sms_lines(settings)
    assert "invoices INV-1, INV-2 and INV-3 ($300.00) are 7 days overdue" in sms["body"]
    link = next(word for word in sms["body"].split() if "/pay/" in word)
    token = read_pay_token(settings, link.rsplit("/", 1)[1])
    assert token.invoice_numbers == ["INV-1", "INV-2", "INV-3"]

    rows = messages(engine)
    assert len(rows) == 6 and {row.status for row in rows} == {"sent"}
    for channel in ("email", "sms"):
        of_channel = [row for row in rows if row.channel == channel]
        [delivering] = [row for row in of_channel if row.sent_with_id == row.id]
        assert {row.sent_with_id for row in of_channel} == {delivering.id}
        assert len({row.group_key for row in of_channel}) == 1


def test_many_invoices_claimed_at_once_still_make_one_message(
    engine: sa.Engine, settings: Settings
) -> None:
    numbers = [f"INV-{n}" for n in range(1, 9)]
    for number in numbers:
        add_invoice(engine, number, balance_minor=10_00)
    email_channel = Counting(OutboxEmail(settings))
    activities = MessagingActivities(engine, settings, email=email_channel)

    outcomes = send_together(activities, numbers, channels=("email",))

    assert {only(outcome).status for outcome in outcomes.values()} == {"sent"}
    assert email_channel.calls == 1
    [path] = eml_files(settings)
    assert eml_text(path).startswith("8 invoices are 7 days overdue")


def test_a_retry_after_the_message_went_out_sends_nothing_more(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    email_channel = Counting(OutboxEmail(settings))
    activities = MessagingActivities(engine, settings, email=email_channel)
    first = send_together(activities, ["INV-1", "INV-2"], channels=("email",))

    again = send_together(activities, ["INV-1", "INV-2"], channels=("email",))

    assert again == first
    assert email_channel.calls == 1
    assert len(eml_files(settings)) == 1


def test_a_crash_while_delivering_the_group_is_finished_by_the_retry(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    email_channel = Counting(OutboxEmail(settings), fail_after=1)
    impatient = settings.model_copy(update={"delivery_timeout_seconds": 0.5})
    activities = MessagingActivities(engine, impatient, email=email_channel)

    outcomes = send_together(activities, ["INV-1", "INV-2"], channels=("email",))
    [crashed] = [n for n, outcome in outcomes.items() if isinstance(outcome, ConnectionError)]
    [waiting] = [number for number in outcomes if number != crashed]
    # The other invoice's attempt waits for the claimer and never delivers on its own.
    assert isinstance(outcomes[waiting], ApplicationError)
    assert "not delivered yet" in str(outcomes[waiting])
    assert email_channel.calls == 1

    retried = send_together(activities, [crashed, waiting], channels=("email",))

    assert {only(outcome).status for outcome in retried.values()} == {"sent"}
    assert email_channel.calls == 2  # the first attempt and its retry, same key
    [path] = eml_files(settings)
    assert "Invoices INV-1 and INV-2" in eml_text(path)


@pytest.mark.parametrize(
    "other",
    [
        {"status": InvoiceStatus.DISPUTED},
        {"status": InvoiceStatus.PAUSED},
        {"balance_minor": 0},
        {"due_on": date(2026, 3, 12)},
        {"currency": "EUR"},
        {"policy_version": 2},
    ],
    ids=["disputed", "paused", "paid", "other-due-date", "other-currency", "other-policy"],
)
def test_invoices_that_are_not_dunned_together_are_not_waited_for(
    engine: sa.Engine, settings: Settings, other: dict
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2", **other)
    slow = settings.model_copy(update={"message_group_window_seconds": 60.0})

    outcome = MessagingActivities(engine, slow).send_reminder(reminder(channels=("email",)))

    assert statuses(outcome) == [("email", "sent", None)]
    [row] = messages(engine)
    assert row.group_key is None
    assert eml_text(eml_files(settings)[0]).startswith("Invoice INV-1 is 7 days overdue")


def test_a_sibling_that_never_comes_is_waited_for_only_the_window(
    engine: sa.Engine, settings: Settings
) -> None:
    # INV-2 is open and due the same day but its workflow sends nothing now (say it sits
    # with a collector): INV-1 goes out alone after the window, and so does INV-2 later.
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    quick = settings.model_copy(update={"message_group_window_seconds": 0.2})
    activities = MessagingActivities(engine, quick)

    first = activities.send_reminder(reminder(number="INV-1", channels=("email",)))
    later = activities.send_reminder(reminder(number="INV-2", channels=("email",)))

    assert statuses(first) == [("email", "sent", None)]
    assert statuses(later) == [("email", "sent", None)]
    subjects = sorted(eml_text(path).splitlines()[0] for path in eml_files(settings))
    assert subjects == ["Invoice INV-1 is 7 days overdue", "Invoice INV-2 is 7 days overdue"]


def test_an_opted_out_channel_is_suppressed_for_every_invoice(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, "INV-1", sms_opt_out=True)
    add_invoice(engine, "INV-2")
    outcomes = send_together(MessagingActivities(engine, settings), ["INV-1", "INV-2"])

    for outcome in outcomes.values():
        assert isinstance(outcome, ReminderOutcome)
        assert [(r.channel, r.status) for r in outcome.results] == [
            ("email", "sent"),
            ("sms", "suppressed"),
        ]
    assert len(eml_files(settings)) == 1
    assert sms_lines(settings) == []


def test_a_window_of_zero_sends_each_invoice_on_its_own(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    separate = settings.model_copy(update={"message_group_window_seconds": 0})
    send_together(MessagingActivities(engine, separate), ["INV-1", "INV-2"], channels=("email",))
    assert len(eml_files(settings)) == 2
    assert all(row.group_key is None for row in messages(engine))
