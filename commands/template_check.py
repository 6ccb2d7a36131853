"""`dunwise templates check [--json]`: every language's message templates, read before any
customer reads them.

For each language (English, and every language folder shipped or in `DUNWISE_TEMPLATES_DIR`)
it lists the English files the language lacks, which its customers get in English instead,
and renders every template in both channels with sample data: one invoice and three, before,
on and after the due date, the portal's receipts in each kind and the fresh pay link. The
command fails when a file is untranslated or a rendering fails, naming the file and the case.
"""

from __future__ import annotations

import json
from argparse import Namespace
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from commands.errors import CommandError

if TYPE_CHECKING:
    from settings import Settings

# (days past due, invoices in the message): the cases a policy's steps produce.
REMINDER_CASES = ((-3, 1), (0, 1), (1, 1), (5, 3), (30, 5))


def check_command(settings: Settings, *, as_json: bool) -> None:
    from activities.template_files import DEFAULT_LANGUAGE, languages, untranslated

    report = {
        language: {
            "untranslated": [] if language == DEFAULT_LANGUAGE else untranslated(language),
            "errors": list(render_errors(settings, language)),
        }
        for language in languages()
    }
    ok = not any(found["untranslated"] or found["errors"] for found in report.values())
    if as_json:
        print(json.dumps({"ok": ok, "languages": report}))
    else:
        for language, found in report.items():
            print(_summary(language, found))
    if not ok:
        if as_json:
            raise SystemExit(1)
        raise CommandError("some templates need attention: see above")


def _summary(language: str, found: dict[str, list[str]]) -> str:
    lines = [f"{language}: " + ("ok" if not any(found.values()) else "needs attention")]
    if found["untranslated"]:
        lines.append(
            f"  in English until translated ({len(found['untranslated'])}): "
            + ", ".join(found["untranslated"])
        )
    lines.extend(f"  fails: {error}" for error in found["errors"])
    return "\n".join(lines)


def render_errors(settings: Settings, language: str) -> Iterator[str]:
    """Every case that does not render in this language, as "what: why"."""
    from activities.rendering import render_message
    from activities.template_files import available_templates
    from commands.templates import sample_context

    for template in sorted(available_templates()):
        for channel in ("email", "sms"):
            for days, invoices in REMINDER_CASES:
                case = Namespace(
                    template=template,
                    channel=channel,
                    locale=language,
                    currency="EUR",
                    days_past_due=days,
                    invoices=invoices,
                )
                try:
                    render_message(template, channel, sample_context(settings, case))
                except Exception as err:  # noqa: BLE001 - every failure is reported, not raised
                    yield f"{template} ({channel}, {days} days, {invoices} invoices): {_why(err)}"
                    break  # one case per channel says enough
    yield from _portal_email_errors(settings, language)


def _portal_email_errors(settings: Settings, language: str) -> Iterator[str]:
    from payments.receipts import (
        FRESH_LINK_TEMPLATE,
        RECEIPT_TEMPLATE,
        ReceiptKind,
        fresh_link_variables,
        receipt_variables,
        render_email,
    )

    customer = _sample_customer(language)
    cases: list[tuple[str, str, dict[str, Any]]] = [
        (FRESH_LINK_TEMPLATE, "", fresh_link_variables(settings, customer))
    ]
    for kind in ReceiptKind:
        for method in ("card", "us_bank_account"):
            checkout, items = _sample_checkout(method, kind)
            variables = receipt_variables(settings, checkout, customer, items, kind)
            cases.append((RECEIPT_TEMPLATE, f"{kind}, {method}", variables))
    for template, what, variables in cases:
        try:
            render_email(settings, customer, template, variables, "sample")
        except Exception as err:  # noqa: BLE001 - every failure is reported, not raised
            yield f"{template}{f' ({what})' if what else ''}: {_why(err)}"


def _why(err: Exception) -> str:
    from jinja2 import TemplateSyntaxError

    if isinstance(err, TemplateSyntaxError):
        return f"{err.filename or err.name}, line {err.lineno}: {err.message}"
    return str(err)


def _sample_customer(language: str) -> Any:
    from commands.templates import SAMPLE_CUSTOMER_ID, SAMPLE_CUSTOMER_NAME

    return SimpleNamespace(
        id=SAMPLE_CUSTOMER_ID, name=SAMPLE_CUSTOMER_NAME, email="ap@example.com", locale=language
    )


def _sample_checkout(method: str, kind: Any) -> tuple[Any, list[Any]]:
    """A checkout of two invoices, one paid in part with a reason, part paid from credit."""
    checkout = SimpleNamespace(
        id=1,
        currency="EUR",
        method=method,
        credit_minor=5_000,
        surcharge_minor=300 if method == "card" else 0,
        charge_minor=120_300,
        payment_intent_id="pi_sample",
        failure_reason="Your card was declined." if kind == "failed" else None,
    )
    items = [
        SimpleNamespace(
            invoice_number="INV-1001", amount_minor=100_000, reason_code=None, note=None
        ),
        SimpleNamespace(
            invoice_number="INV-1002",
            amount_minor=25_000,
            reason_code="pricing_dispute",
            note="the price agreed was lower",
        ),
    ]
    return checkout, items
