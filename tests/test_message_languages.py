"""Messages in the customer's language: the shipped English, German, French and Spanish
templates, money and dates in the customer's locale, the fall back to English for what a
language lacks, and `dunwise templates check` reporting it."""

from __future__ import annotations

import email
import json
from datetime import date
from email import policy
from pathlib import Path

import pytest

from activities.rendering import MessageContext, render_message
from activities.template_files import available_templates
from tests.invoice_harness import DUE, invoice_harness, local
from tests.test_templates_command import templates, templates_with
from workflows.invoice import InvoiceWorkflow
from workflows.models import PaymentReceived


def context(locale: str, days_past_due: int = 5) -> MessageContext:
    return MessageContext(
        customer_name="Acme GmbH",
        company_name="Northwind",
        invoice_number="INV-7",
        currency="EUR",
        amount_due_minor=123_456,
        total_minor=123_456,
        due_on=date(2026, 3, 16),
        days_past_due=days_past_due,
        pay_link="https://pay.example/p/1",
        locale=locale,
    )


@pytest.mark.parametrize(
    ("locale", "greeting", "money", "day", "sms_words"),
    [
        ("en-US", "Hello Acme GmbH,", "€1,234.56", "March 16, 2026", "overdue"),
        ("de-DE", "Guten Tag Acme GmbH,", "1.234,56\xa0€", "16. März 2026", "überfällig"),
        ("fr-FR", "Bonjour Acme GmbH,", "1\u202f234,56\xa0€", "16 mars 2026", "échéance"),
        ("es-ES", "Hola, Acme GmbH:", "1.234,56\xa0€", "16 de marzo de 2026", "retraso"),
    ],
)
def test_each_shipped_language_speaks_with_its_own_money_and_dates(
    locale: str, greeting: str, money: str, day: str, sms_words: str
) -> None:
    mail = render_message("overdue_friendly", "email", context(locale))
    assert mail.text.startswith(greeting)
    assert money in mail.text and day in mail.text
    assert f'lang="{locale[:2]}"' in (mail.html or "")
    sms = render_message("overdue_friendly", "sms", context(locale))
    assert sms_words in sms.text and "STOP" in sms.text


@pytest.mark.parametrize("locale", ["de-DE", "fr-FR", "es-ES"])
def test_no_english_is_left_in_a_translated_reminder(locale: str) -> None:
    for template in sorted(available_templates()):
        for days in (-3, 0, 12):
            mail = render_message(template, "email", context(locale, days))
            for english in ("Invoice", "invoice", "Kind regards", "Pay online", "overdue"):
                assert english not in f"{mail.subject}\n{mail.text}", (template, days, english)


def test_a_language_without_templates_gets_english_in_its_own_formats() -> None:
    mail = render_message("overdue_friendly", "email", context("it-IT"))
    assert mail.text.startswith("Hello Acme GmbH,")
    assert "1.234,56\xa0€" in mail.text and "16 marzo 2026" in mail.text


async def test_a_german_customer_gets_german_reminders_and_a_german_receipt(tmp_path) -> None:
    async with invoice_harness(tmp_path) as h:
        handle = await h.start(
            "RE-2026-7",
            due_on=DUE,
            amount_minor=123_456,
            currency="EUR",
            timezone="Europe/Berlin",
            locale="de-DE",
        )
        await h.advance_to(local(date(2026, 3, 17), 12, "Europe/Berlin"))
        paid = PaymentReceived(amount_minor=123_456, currency="EUR", method="card")
        await handle.execute_update(InvoiceWorkflow.record_payment, paid, id="paid")
        await handle.result()
        outbox = h.settings.effective_outbox_dir
        mails = [
            email.message_from_bytes(path.read_bytes(), policy=policy.default)
            for path in sorted((outbox / "email").glob("*.eml"))
        ]
        subjects = sorted(str(mail["Subject"]) for mail in mails)
        assert subjects == [
            "Rechnung RE-2026-7 ist vollständig bezahlt, vielen Dank",
            "Rechnung RE-2026-7 von Example Co ist am 16. März 2026 fällig",
            "Rechnung RE-2026-7 von Example Co ist heute fällig",
        ]
        bodies = [mail.get_body(("plain",)).get_content() for mail in mails]
        assert all(body.startswith("Guten Tag Customer of RE-2026-7,") for body in bodies)
        assert any("1.234,56\xa0€" in body and "16. März 2026" in body for body in bodies)
        sms = [json.loads(line) for line in (outbox / "sms.jsonl").read_text().splitlines()]
        assert sms and all("Abmelden: STOP antworten" in line["body"] for line in sms)


def test_templates_check_passes_on_the_shipped_languages(tmp_path: Path) -> None:
    done = templates(tmp_path, "check", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert sorted(report["languages"]) == ["de", "en", "es", "fr"]
    assert all(
        not found["untranslated"] and not found["errors"] for found in report["languages"].values()
    )


def test_templates_check_reports_untranslated_files_and_broken_ones(tmp_path: Path) -> None:
    own = tmp_path / "our-templates"
    (own / "it").mkdir(parents=True)
    (own / "it" / "courtesy.subject.txt").write_text("Promemoria: fattura {{ invoice_number }}")
    (own / "de").mkdir()
    (own / "de" / "due_today.sms.txt").write_text("{{ company_name }: kaputt")
    env = {"DUNWISE_TEMPLATES_DIR": str(own)}

    done = templates_with(tmp_path, env, "check")
    assert done.returncode == 1
    assert "it: needs attention" in done.stdout
    assert "due_today.txt" in done.stdout.split("it: needs attention")[1]
    assert (
        f"fails: due_today (sms, -3 days, 1 invoices): {own / 'de' / 'due_today.sms.txt'}, line 1"
        in done.stdout
    )
    assert "dunwise templates: some templates need attention" in done.stderr

    report = json.loads(templates_with(tmp_path, env, "check", "--json").stdout)
    assert report["ok"] is False
    assert "courtesy.subject.txt" not in report["languages"]["it"]["untranslated"]
    assert "courtesy.txt" in report["languages"]["it"]["untranslated"]
    assert report["languages"]["fr"] == {"untranslated": [], "errors": []}

    # The Italian customer reads the one Italian file, and English for the rest.
    preview = templates_with(tmp_path, env, "preview", "courtesy", "--locale", "it", "--json")
    courtesy = json.loads(preview.stdout)
    assert courtesy["subject"] == "Promemoria: fattura INV-1001"
    assert courtesy["text"].startswith("Hello Acme Corp,")


@pytest.mark.parametrize("locale", ["en", "de", "fr", "es"])
def test_a_translated_layout_escapes_html_and_leaves_text_alone(locale: str) -> None:
    named = context(locale).model_copy(
        update={"customer_name": "Tom & <Jerry>", "company_name": "A<B>"}
    )
    mail = render_message("overdue_friendly", "email", named)
    assert "Tom &amp; &lt;Jerry&gt;" in (mail.html or "") and "<Jerry>" not in (mail.html or "")
    assert "A&lt;B&gt;" in (mail.html or "")
    assert "Tom & <Jerry>" in mail.text and "A<B>" in mail.text
