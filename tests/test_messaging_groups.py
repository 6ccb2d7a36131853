"""Reminders of several invoices of one customer go out as one message, on SQLite and
PostgreSQL: the grouped activity the customer's coordinator calls, and the grouping the
coordination activity names (which invoices belong together).
"""

from __future__ import annotations

import email
import email.policy
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from activities.coordination import CoordinationActivities
from activities.delivery import OutboxEmail
from activities.grouped_messages import GroupedMessagingActivities
from activities.models import ChannelResult, GroupedReminder, ReminderDue, ReminderOutcome
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


def send_group(
    activities: GroupedMessagingActivities,
    numbers: list[str],
    limited: tuple[str, ...] = (),
    **kwargs,
) -> dict[str, ReminderOutcome]:
    """The grouped activity for these invoices' reminders; each invoice's outcome."""
    reminders = [reminder(number=number, **kwargs) for number in numbers]
    answer = activities.send_grouped_reminder(
        GroupedReminder(reminders=reminders, limited_channels=list(limited))
    )
    return {r.invoice_number: answer.outcomes[r.idempotency_key] for r in reminders}


def only(outcome: ReminderOutcome) -> ChannelResult:
    [result] = outcome.results
    return result


def eml_text(path: Path) -> str:
    eml = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return eml["Subject"] + "\n" + eml.get_body(("plain",)).get_content()


def test_invoices_due_the_same_day_share_one_message(engine: sa.Engine, settings: Settings) -> None:
    for number in ("INV-1", "INV-2", "INV-3"):
        add_invoice(engine, number, balance_minor=100_00)
    outcomes = send_group(GroupedMessagingActivities(engine, settings), ["INV-3", "INV-1", "INV-2"])

    assert statuses(outcomes["INV-1"]) == [
        ("email", "sent", "in one message with INV-2, INV-3"),
        ("sms", "sent", "in one message with INV-2, INV-3"),
    ]
    assert statuses(outcomes["INV-2"])[0] == ("email", "sent", "in one message with INV-1, INV-3")
    [path] = eml_files(settings)
    text = eml_text(path)
    assert text.startswith("Invoices INV-1, INV-2 and INV-3 are 7 days overdue")
    assert "invoices INV-1, INV-2 and INV-3 for $300.00 were due on March 13, 2026" in text
    for number in ("INV-1", "INV-2", "INV-3"):
        assert f"Invoice {number}: $100.00" in text
    assert "Total due:     $300.00" in text  # aligned under "Invoice INV-1: "

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


def test_many_invoices_make_one_message(engine: sa.Engine, settings: Settings) -> None:
    numbers = [f"INV-{n}" for n in range(1, 9)]
    for number in numbers:
        add_invoice(engine, number, balance_minor=10_00)
    email_channel = Counting(OutboxEmail(settings))
    activities = GroupedMessagingActivities(engine, settings, email=email_channel)

    outcomes = send_group(activities, numbers, channels=("email",))

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
    activities = GroupedMessagingActivities(engine, settings, email=email_channel)
    first = send_group(activities, ["INV-1", "INV-2"], channels=("email",))

    again = send_group(activities, ["INV-1", "INV-2"], channels=("email",))

    assert again == first
    assert email_channel.calls == 1
    assert len(eml_files(settings)) == 1


def test_a_crash_while_delivering_the_group_is_finished_by_the_retry(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    email_channel = Counting(OutboxEmail(settings), fail_after=1)
    activities = GroupedMessagingActivities(engine, settings, email=email_channel)

    with pytest.raises(ConnectionError):
        send_group(activities, ["INV-1", "INV-2"], channels=("email",))
    assert email_channel.calls == 1
    assert {row.status for row in messages(engine)} == {"sending"}

    retried = send_group(activities, ["INV-1", "INV-2"], channels=("email",))

    assert {only(outcome).status for outcome in retried.values()} == {"sent"}
    assert email_channel.calls == 2  # the first attempt and its retry, same key
    [path] = eml_files(settings)
    assert "Invoices INV-1 and INV-2" in eml_text(path)


def test_an_invoice_settled_meanwhile_is_left_out_of_the_message(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2", balance_minor=0)
    add_invoice(engine, "INV-3")
    outcomes = send_group(
        GroupedMessagingActivities(engine, settings),
        ["INV-1", "INV-2", "INV-3"],
        channels=("email",),
    )
    assert statuses(outcomes["INV-2"]) == [
        ("email", "suppressed", "nothing is due on this invoice")
    ]
    assert statuses(outcomes["INV-1"]) == [("email", "sent", "in one message with INV-3")]
    [path] = eml_files(settings)
    assert eml_text(path).startswith("Invoices INV-1 and INV-3")


def test_a_channel_over_the_contact_limit_is_suppressed_for_every_invoice(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    outcomes = send_group(
        GroupedMessagingActivities(engine, settings), ["INV-1", "INV-2"], limited=("sms",)
    )
    for outcome in outcomes.values():
        assert [(r.channel, r.status) for r in outcome.results] == [
            ("email", "sent"),
            ("sms", "suppressed"),
        ]
        assert "contact limit" in (outcome.results[1].reason or "")
    assert len(eml_files(settings)) == 1
    assert sms_lines(settings) == []


def test_an_opted_out_channel_is_suppressed_for_every_invoice(
    engine: sa.Engine, settings: Settings
) -> None:
    add_invoice(engine, "INV-1", sms_opt_out=True)
    add_invoice(engine, "INV-2")
    outcomes = send_group(GroupedMessagingActivities(engine, settings), ["INV-1", "INV-2"])

    for outcome in outcomes.values():
        assert [(r.channel, r.status) for r in outcome.results] == [
            ("email", "sent"),
            ("sms", "suppressed"),
        ]
    assert len(eml_files(settings)) == 1
    assert sms_lines(settings) == []


def due(number: str = "INV-1") -> ReminderDue:
    return ReminderDue(
        reminder=reminder(number=number),
        customer_id="cust-1",
        customer_timezone="UTC",
        invoice_workflow_id=f"invoice-{number}",
    )


def group_of(engine: sa.Engine, settings: Settings, number: str) -> tuple[str, list[str]]:
    grouping = CoordinationActivities(None, engine, settings, None)._grouping(due(number))  # type: ignore[arg-type]
    assert grouping is not None, f"{number} is not the customer's only open invoice"
    return grouping


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
    add_invoice(engine, "INV-3")
    group, expected = group_of(engine, settings, "INV-1")
    assert expected == ["INV-1", "INV-3"]
    assert group_of(engine, settings, "INV-3")[0] == group


@pytest.mark.parametrize(
    "other",
    [{"due_on": date(2026, 3, 12)}, {"currency": "EUR"}, {"policy_version": 2}],
    ids=["other-due-date", "other-currency", "other-policy"],
)
def test_a_reminder_with_no_one_to_wait_for_goes_alone_unless_a_contact_limit_is_kept(
    engine: sa.Engine, settings: Settings, other: dict
) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2", **other)  # open, but not dunned with INV-1
    coordination = CoordinationActivities(None, engine, settings, None)  # type: ignore[arg-type]
    assert coordination._grouping(due("INV-1")) is None

    limited = settings.model_copy(update={"reminders_per_channel_per_day": 1})
    group, expected = group_of(engine, limited, "INV-1")
    assert expected == ["INV-1"]  # through the coordinator, which keeps the limit
    assert group.startswith("group:")


def test_a_window_of_zero_waits_for_no_one(engine: sa.Engine, settings: Settings) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    separate = settings.model_copy(update={"message_group_window_seconds": 0})
    assert group_of(engine, separate, "INV-1")[1] == []
