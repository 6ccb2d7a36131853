"""`dunwise templates list [--json]`, `dunwise templates check [--json]` (see
`commands.template_check`) and `dunwise templates preview TEMPLATE [--channel
email|sms] [--locale L] [--currency CODE] [--days-past-due N] [--invoices N] [--html]
[--json]`: the message templates finance ops can name in a policy, and one rendered with sample
data, so a reminder can be read before any customer gets it.

The sample is one customer of the configured company with N invoices due the same day (one
message for all, as the customer's coordinator sends them); a template whose name ends in
`receipt` is shown paid in full by card. Money and dates are formatted for `--locale` as a
customer's locale formats them. Rendering needs no database or Temporal server.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, timedelta
from typing import TYPE_CHECKING

from commands.errors import CommandError

if TYPE_CHECKING:
    from activities.rendering import MessageContext, RenderedMessage
    from settings import Settings

SAMPLE_CUSTOMER_ID = "sample-customer"
SAMPLE_CUSTOMER_NAME = "Acme Corp"
SAMPLE_AMOUNT_MINOR = 125_000  # each invoice, in the currency's minor units


def add_template_parsers(commands: argparse._SubParsersAction) -> None:
    """The `templates` command, on the command line's subparsers."""
    templates = commands.add_parser("templates", help="list message templates or preview one")
    actions = templates.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the templates a policy step can name")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    preview = actions.add_parser("preview", help="render a template with sample data")
    preview.add_argument("template")
    preview.add_argument("--channel", choices=("email", "sms"), default="email")
    preview.add_argument("--locale", default="en", help="formats money and dates (en, de-DE, ...)")
    preview.add_argument("--currency", default="USD", help="ISO 4217 code (default USD)")
    preview.add_argument(
        "--days-past-due", type=int, default=0, help="negative before the due date (default 0)"
    )
    preview.add_argument("--invoices", type=int, default=1, help="invoices in the message")
    preview.add_argument("--html", action="store_true", help="print the email's HTML part")
    preview.add_argument("--json", action="store_true", help="print one JSON object")
    check = actions.add_parser(
        "check", help="untranslated files and renderings that fail, in every language"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")


def templates_command(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "list":
        list_templates(as_json=args.json)
    elif args.action == "check":
        from commands.template_check import check_command

        check_command(settings, as_json=args.json)
    else:
        preview_template(settings, args)


def list_templates(*, as_json: bool) -> None:
    from activities.template_files import available_templates

    names = sorted(available_templates())
    print(json.dumps({"templates": names}) if as_json else "\n".join(names))


def preview_template(settings: Settings, args: argparse.Namespace) -> None:
    from activities.rendering import UnknownTemplate, render_message

    if not 1 <= args.invoices <= 50:
        raise CommandError(f"--invoices must be between 1 and 50, got {args.invoices}")
    context = sample_context(settings, args)
    try:
        rendered = render_message(args.template, args.channel, context)
    except UnknownTemplate as missing:
        from activities.template_files import available_templates

        known = ", ".join(sorted(available_templates()))
        raise CommandError(f"{missing}; the templates are: {known}") from None
    if args.json:
        print(
            json.dumps({"template": args.template, "locale": args.locale, **rendered.model_dump()})
        )
    elif args.html:
        if rendered.html is None:
            raise CommandError("an SMS has no HTML part; leave out --html")
        print(rendered.html)
    else:
        print(_as_text(rendered))


def sample_context(settings: Settings, args: argparse.Namespace) -> MessageContext:
    """A customer's message about `args.invoices` invoices due the same day."""
    from babel import Locale, UnknownLocaleError

    from activities.currency import currency_exponent
    from activities.rendering import InvoiceLine, MessageContext, PaymentLine, brand_of
    from paylinks import make_pay_link, make_unsubscribe_link

    currency = args.currency.upper()
    try:
        currency_exponent(currency)
    except ValueError as err:
        raise CommandError(f"--currency: {err}") from None
    try:
        Locale.parse(args.locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        message = f"--locale: {args.locale!r} is not a locale like en, de-DE or fr_FR"
        raise CommandError(message) from None
    today = date.today()
    due_on = today - timedelta(days=args.days_past_due)
    numbers = [f"INV-{1001 + index}" for index in range(args.invoices)]
    receipt = args.template.endswith("receipt")
    due_each = 0 if receipt else SAMPLE_AMOUNT_MINOR
    total_minor = SAMPLE_AMOUNT_MINOR * len(numbers)
    return MessageContext(
        customer_name=SAMPLE_CUSTOMER_NAME,
        company_name=settings.company_name,
        invoice_number=numbers[0],
        currency=currency,
        amount_due_minor=due_each * len(numbers),
        total_minor=total_minor,
        due_on=due_on,
        days_past_due=args.days_past_due,
        pay_link=make_pay_link(settings, SAMPLE_CUSTOMER_ID, numbers),
        locale=args.locale,
        unsubscribe_link=(
            make_unsubscribe_link(settings, SAMPLE_CUSTOMER_ID, "email")
            if args.channel == "email"
            else None
        ),
        payments=(
            [PaymentLine(received_on=today, method="card", amount_minor=total_minor)]
            if receipt
            else []
        ),
        invoices=(
            [
                InvoiceLine(number=n, amount_due_minor=due_each, total_minor=SAMPLE_AMOUNT_MINOR)
                for n in numbers
            ]
            if len(numbers) > 1
            else []
        ),
        brand=brand_of(settings),
    )


def _as_text(rendered: RenderedMessage) -> str:
    if rendered.channel == "sms":
        return f"SMS ({len(rendered.text)} characters):\n{rendered.text}"
    return f"Subject: {rendered.subject}\n\n{rendered.text}"
