"""Server-rendered pages: one Jinja2 environment over `templates/pages/`, one shared layout,
amounts and dates formatted for the payer's locale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from activities.currency import format_day, format_money, to_major
from ledger.models import ShortPayReason
from vocabulary import AWAITING_PAYMENT

PAGES_DIR = Path(__file__).resolve().parent.parent / "templates" / "pages"

templates = Jinja2Templates(directory=str(PAGES_DIR))
templates.env.globals["money"] = format_money
templates.env.globals["day"] = format_day
templates.env.globals["major"] = lambda minor, currency: str(to_major(minor, currency))
templates.env.globals["AWAITING_PAYMENT"] = AWAITING_PAYMENT
# Why less than the balance is paid, or the invoice disputed, as a form's (value, label) choices.
REASON_CHOICES = [
    (reason.value, reason.value.replace("_", " ").capitalize()) for reason in ShortPayReason
]


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    settings = request.app.state.services.settings
    brand = {
        "company_name": settings.company_name,
        "brand_color": settings.brand_color,
        "logo_url": settings.logo_url,
        "support_email": settings.support_email or settings.email_from,
    }
    return templates.TemplateResponse(request, name, {**brand, **context}, status_code=status_code)
