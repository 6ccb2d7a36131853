"""Render reminder and receipt messages from the Jinja2 templates in templates/messages/.

Each message template NAME has four files: NAME.subject.txt, NAME.txt and NAME.html for
email, NAME.sms.txt for SMS. Files starting with "_" are shared layouts and macros.
The customer's locale picks the language folder (see `activities.template_files`) and
formats money and dates; the phrases built here (`invoices_text`, `count`) are English, so
translations build theirs from `invoice_numbers`, `join_words` and `plural`.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel.dates import format_date
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound
from pydantic import BaseModel, Field

from activities.currency import currency_exponent, format_day, format_money, parse_locale
from activities.template_files import (
    DEFAULT_LANGUAGE,
    EMAIL_PARTS,
    SMS_PARTS,
    template_file,
    template_folders,
)
from activities.template_files import available_templates as available_templates
from vocabulary import CHANNELS, Channel

if TYPE_CHECKING:
    from settings import Settings

TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
SMS_MAX_CHARS = 300


class UnknownTemplate(LookupError):
    """A message template name with no files behind it."""


class PaymentLine(BaseModel):
    """One payment applied to the invoice, for receipts."""

    received_on: date
    method: str
    reference: str | None = None
    amount_minor: int = Field(description="the part of the payment applied to this invoice")


class InvoiceLine(BaseModel):
    """One invoice of a reminder that covers several invoices due the same day."""

    number: str
    amount_due_minor: int
    total_minor: int


class Brand(BaseModel):
    """The sender's look and sign-off, from settings (`brand_of`)."""

    color: str = "#1d4ed8"
    logo_url: str | None = None
    signature: str | None = None
    legal_footer: str | None = None


class MessageContext(BaseModel):
    customer_name: str
    company_name: str
    invoice_number: str = Field(description="the invoice of a single-invoice message")
    currency: str = Field(min_length=3, max_length=3)
    amount_due_minor: int = Field(description="due on all the invoices of the message")
    total_minor: int
    due_on: date
    days_past_due: int = Field(description="negative before the due date")
    pay_link: str
    locale: str = "en"
    unsubscribe_link: str | None = None
    payments: list[PaymentLine] = Field(default_factory=list)
    adjustments_minor: int = Field(0, description="credits (negative) and fees, for receipts")
    credit_minor: int = Field(0, description="overpayment kept as customer credit, for receipts")
    invoices: list[InvoiceLine] = Field(
        default_factory=list, description="every invoice of a grouped reminder; empty for one"
    )
    brand: Brand = Field(default_factory=Brand)


class RenderedMessage(BaseModel):
    channel: Channel
    text: str
    subject: str | None = None
    html: str | None = None


def _plural(number: int, one: str, other: str) -> str:
    """plural(1, "Tag", "Tage") == "1 Tag", plural(3, "Tag", "Tage") == "3 Tage"."""
    return f"{number} {one if number == 1 else other}"


def _count(number: int, word: str) -> str:
    """count(1, "day") == "1 day", count(3, "day") == "3 days"."""
    return _plural(number, word, f"{word}s")


def _join_words(words: list[str], last: str = "and") -> str:
    """["A", "B", "C"] | join_words("und") == "A, B und C"."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"


def _upper_first(text: str) -> str:
    """Start a sentence without lowering the rest, as `capitalize` would ("INV-7")."""
    return text[:1].upper() + text[1:]


def invoices_phrase(numbers: list[str]) -> str:
    """ "invoice A", "invoices A and B", "invoices A, B and C"; beyond that "4 invoices",
    since the message lists them all and an SMS must stay short."""
    if len(numbers) == 1:
        return f"invoice {numbers[0]}"
    if len(numbers) > 3:
        return f"{len(numbers)} invoices"
    return f"invoices {', '.join(numbers[:-1])} and {numbers[-1]}"


@lru_cache
def _environment(folders: tuple[Path, ...]) -> Environment:
    env = Environment(
        loader=FileSystemLoader(folders),
        # Only HTML is escaped: subjects, text bodies and SMS are plain text.
        autoescape=lambda name: name is not None and name.endswith(".html"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.globals["count"] = _count
    env.globals["plural"] = _plural
    env.filters["upper_first"] = _upper_first
    env.filters["join_words"] = _join_words
    return env


def brand_of(settings: Settings) -> Brand:
    """The sender's look and sign-off, as settings give them."""
    return Brand(
        color=settings.brand_color,
        logo_url=settings.logo_url,
        signature=settings.email_signature,
        legal_footer=settings.legal_footer,
    )


def brand_variables(brand: Brand, company_name: str) -> dict[str, Any]:
    """What the layouts show of the sender: every message's template sees these."""
    return {
        "brand_color": brand.color,
        "logo_url": brand.logo_url,
        "signature": brand.signature,  # unset: each language's layout signs for the team
        "legal_footer": brand.legal_footer,
    }


def template_variables(context: MessageContext) -> dict[str, Any]:
    """What templates see: the context plus amounts and dates formatted for the customer."""
    locale = context.locale
    currency = context.currency.upper()
    currency_exponent(currency)  # refuse an unknown currency before anything is shown
    paid_minor = sum(line.amount_minor for line in context.payments)
    invoices = context.invoices or [
        InvoiceLine(
            number=context.invoice_number,
            amount_due_minor=context.amount_due_minor,
            total_minor=context.total_minor,
        )
    ]
    return {
        **context.model_dump(),
        **brand_variables(context.brand, context.company_name),
        "invoices": [
            {
                "number": line.number,
                "amount_due": format_money(line.amount_due_minor, currency, locale),
                "total": format_money(line.total_minor, currency, locale),
            }
            for line in invoices
        ],
        "grouped": len(invoices) > 1,
        "invoice_numbers": [line.number for line in invoices],
        "invoices_text": invoices_phrase([line.number for line in invoices]),
        "is_are": "are" if len(invoices) > 1 else "is",
        "was_were": "were" if len(invoices) > 1 else "was",
        "currency": currency,
        "lang": parse_locale(locale).language,
        "amount_due": format_money(context.amount_due_minor, currency, locale),
        "total": format_money(context.total_minor, currency, locale),
        "amount_paid": format_money(paid_minor, currency, locale),
        "adjustments": format_money(context.adjustments_minor, currency, locale),
        "credit": format_money(context.credit_minor, currency, locale),
        "partially_paid": 0 < context.amount_due_minor < context.total_minor,
        "due_date": format_day(context.due_on, locale),
        "due_date_short": format_date(context.due_on, format="medium", locale=parse_locale(locale)),
        "days_overdue": max(context.days_past_due, 0),
        "days_until_due": max(-context.days_past_due, 0),
        "payments": [
            {
                "received_on": format_day(line.received_on, locale),
                "method": line.method.replace("_", " "),
                "reference": line.reference,
                "amount": format_money(line.amount_minor, currency, locale),
            }
            for line in context.payments
        ],
    }


def language_of(locale: str | None) -> str:
    """The language part of a customer's locale ("de-AT" -> "de"); English when unknown."""
    return parse_locale(locale).language


def templates(language: str = DEFAULT_LANGUAGE) -> Environment:
    """The Jinja2 environment over a language's templates, falling back to English."""
    return _environment(template_folders(language))


def _one_line(text: str) -> str:
    # Subjects and SMS bodies are single lines; a newline in a subject would break the header.
    return " ".join(text.split())


def render_message(template: str, channel: str, context: MessageContext) -> RenderedMessage:
    """Render one template for one channel; raise UnknownTemplate when it does not exist."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}: expected 'email' or 'sms'")
    if not TEMPLATE_NAME.match(template):
        raise UnknownTemplate(f"no message template named {template!r}")
    parts = EMAIL_PARTS if channel == "email" else SMS_PARTS
    missing = [
        f"{template}.{part}" for part in parts if template_file(f"{template}.{part}") is None
    ]
    if missing:
        folders = " or ".join(str(folder) for folder in template_folders())
        raise UnknownTemplate(
            f"no message template named {template!r} for {channel}: "
            f"missing {', '.join(missing)} in {folders}"
        )
    variables = template_variables(context)
    env = templates(language_of(context.locale))

    def render(name: str) -> str:
        return env.get_template(name).render(variables)

    try:
        if channel == "sms":
            return RenderedMessage(channel="sms", text=_one_line(render(f"{template}.sms.txt")))
        return RenderedMessage(
            channel="email",
            subject=_one_line(render(f"{template}.subject.txt")),
            text=render(f"{template}.txt").strip() + "\n",
            html=render(f"{template}.html"),
        )
    except TemplateNotFound as missing_include:
        raise UnknownTemplate(
            f"message template {template!r} refers to {missing_include.name!r}, "
            "which does not exist"
        ) from None
