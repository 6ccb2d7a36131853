from __future__ import annotations

from datetime import date

import pytest
from jinja2 import UndefinedError

from activities.currency import currency_exponent, format_money, to_major
from activities.rendering import (
    SMS_MAX_CHARS,
    MessageContext,
    PaymentLine,
    UnknownTemplate,
    available_templates,
    render_message,
    templates,
)
from activities.template_files import TEMPLATE_DIR

REMINDERS = ["courtesy", "due_today", "overdue_friendly", "overdue_firm", "final_notice"]
PAY_LINK = (
    "https://pay.example-company.com/pay/eyJjIjoiY3VzdC0wMDAxMjMiLCJpIjpbIklOVi0yMDI1LTAwMDQyIl19"
    ".awQEXg.Bk6stMqrnc6xWPqekbugeLFP9-M"
)


def context(**changes: object) -> MessageContext:
    values: dict[str, object] = {
        "customer_name": "Acme Industrial Supplies",
        "company_name": "Northwind Traders",
        "invoice_number": "INV-2025-000042",
        "currency": "USD",
        "amount_due_minor": 123450,
        "total_minor": 123450,
        "due_on": date(2025, 3, 5),
        "days_past_due": 14,
        "pay_link": PAY_LINK,
        "locale": "en_US",
        "unsubscribe_link": "https://pay.example-company.com/unsubscribe/abc",
    }
    values.update(changes)
    return MessageContext.model_validate(values)


def test_every_policy_template_and_the_receipt_exist() -> None:
    assert set(REMINDERS) | {"receipt"} <= available_templates()


@pytest.mark.parametrize("template", REMINDERS)
def test_reminder_email_has_what_a_customer_needs(template: str) -> None:
    message = render_message(template, "email", context())
    assert message.subject and "INV-2025-000042" in message.subject
    assert "\n" not in message.subject
    for body in (message.text, message.html):
        assert body is not None
        assert "Northwind Traders" in body
        assert "INV-2025-000042" in body
        assert "$1,234.50" in body
        assert "March 5, 2025" in body
        assert PAY_LINK in body
        assert "unsubscribe" in body
    assert message.html is not None and message.html.lstrip().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("template", ["overdue_friendly", "overdue_firm", "final_notice"])
def test_overdue_emails_say_how_many_days(template: str) -> None:
    message = render_message(template, "email", context(days_past_due=14))
    assert "14 days" in message.text


def test_one_day_is_singular() -> None:
    message = render_message("overdue_friendly", "email", context(days_past_due=1))
    assert "1 day overdue" in (message.subject or "")


def test_courtesy_counts_days_until_due() -> None:
    message = render_message("courtesy", "email", context(days_past_due=-3))
    assert "3 days from now" in message.text
    assert "Days overdue" not in message.text


@pytest.mark.parametrize("template", [*REMINDERS, "receipt"])
def test_sms_is_short_with_link_and_opt_out(template: str) -> None:
    long_names = context(
        company_name="Northwind Traders International",
        payments=[
            PaymentLine(received_on=date(2025, 3, 1), method="card", amount_minor=23450),
        ],
        amount_due_minor=100000,
        total_minor=123450,
    )
    message = render_message(template, "sms", long_names)
    assert message.subject is None and message.html is None
    assert len(message.text) < SMS_MAX_CHARS
    assert "Reply STOP to opt out" in message.text
    assert PAY_LINK in message.text
    assert "\n" not in message.text


def test_html_is_escaped_and_text_is_not() -> None:
    message = render_message("due_today", "email", context(customer_name="Tom & <Jerry>"))
    assert message.html is not None
    assert "Tom &amp; &lt;Jerry&gt;" in message.html
    assert "<Jerry>" not in message.html
    assert "Tom & <Jerry>" in message.text


@pytest.mark.parametrize("template", [*REMINDERS, "receipt"])
def test_emails_extend_the_shared_layouts(template: str) -> None:
    assert (TEMPLATE_DIR / f"{template}.html").read_text().startswith('{% extends "_base.html" %}')
    assert (TEMPLATE_DIR / f"{template}.txt").read_text().startswith('{% extends "_base.txt" %}')


def test_partially_paid_invoice_shows_total_and_amount_due() -> None:
    message = render_message(
        "overdue_friendly", "email", context(total_minor=150000, amount_due_minor=123450)
    )
    assert "$1,500.00" in message.text and "$1,234.50" in message.text


def test_receipt_lists_payments_and_remaining_balance() -> None:
    receipt = context(
        amount_due_minor=0,
        total_minor=150000,
        adjustments_minor=-10000,
        payments=[
            PaymentLine(
                received_on=date(2025, 3, 1),
                method="bank_transfer",
                reference="TRX-1",
                amount_minor=40000,
            ),
            PaymentLine(received_on=date(2025, 3, 9), method="card", amount_minor=100000),
        ],
    )
    message = render_message("receipt", "email", receipt)
    assert message.subject == "Invoice INV-2025-000042 is paid in full, thank you"
    for body in (message.text, message.html):
        assert body is not None
        assert "bank transfer" in body and "TRX-1" in body
        assert "$400.00" in body and "$1,000.00" in body
        assert "$1,400.00" in body  # paid in total
        assert "-$100.00" in body  # the credit note
        assert "paid in full" in body


def test_receipt_for_a_partial_payment_links_to_the_rest() -> None:
    receipt = context(
        amount_due_minor=60000,
        total_minor=100000,
        payments=[PaymentLine(received_on=date(2025, 3, 1), method="card", amount_minor=40000)],
    )
    message = render_message("receipt", "email", receipt)
    assert message.subject == "Payment received for invoice INV-2025-000042, thank you"
    assert f"You can pay the rest here: {PAY_LINK}" in message.text


def test_unknown_template_is_named_in_the_error() -> None:
    with pytest.raises(UnknownTemplate, match="'reminder_42'"):
        render_message("reminder_42", "email", context())
    with pytest.raises(UnknownTemplate, match="'reminder_42'"):
        render_message("reminder_42", "sms", context())


@pytest.mark.parametrize("name", ["../settings", "_base", "Courtesy", ""])
def test_template_names_cannot_reach_other_files(name: str) -> None:
    with pytest.raises(UnknownTemplate):
        render_message(name, "email", context())


def test_unknown_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="fax"):
        render_message("courtesy", "fax", context())


def test_missing_variable_is_an_error() -> None:
    with pytest.raises(UndefinedError):
        templates().from_string("Hello {{ customer_nmae }}").render(customer_name="x")


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown currency"):
        render_message("courtesy", "email", context(currency="XYZ"))


@pytest.mark.parametrize(
    ("minor", "currency", "locale", "shown"),
    [
        (123450, "USD", "en_US", "$1,234.50"),
        (123450, "EUR", "en", "€1,234.50"),
        (1234, "JPY", "en", "¥1,234"),
        (1234567, "KWD", "en", "KWD1,234.567"),
        (1234567, "IQD", "en", "IQD1,234.567"),  # ISO 4217 says 3 decimals, CLDR shows 0
        (5, "USD", "en", "$0.05"),
        (-10000, "USD", "en", "-$100.00"),
        (123450, "EUR", "de_DE", "1.234,50\xa0€"),
        (123450, "USD", "not-a-locale", "$1,234.50"),
        (123456789012345678, "USD", "en", "$1,234,567,890,123,456.78"),
    ],
)
def test_money_is_formatted_exactly(minor: int, currency: str, locale: str, shown: str) -> None:
    assert format_money(minor, currency, locale) == shown


def test_currency_exponents_follow_iso_4217() -> None:
    assert [currency_exponent(code) for code in ("USD", "jpy", "KWD", "IQD")] == [2, 0, 3, 3]
    assert str(to_major(123450, "USD")) == "1234.50"
    assert str(to_major(100, "USD")) == "1.00"


def test_locale_formats_dates_and_amounts() -> None:
    message = render_message("due_today", "email", context(locale="de_DE", currency="EUR"))
    assert "1.234,50\xa0€" in message.text
    assert "5. März 2025" in message.text
