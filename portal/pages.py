"""Server-rendered pages: Jinja2 environments over `templates/pages/`, one shared layout,
amounts and dates formatted for the payer's locale.

There is one environment per shipped language, each with that language's gettext catalog
installed (`jinja2.ext.i18n`, new style), built at first use and cached. A payer page is
rendered in the language `portal.page_language` picks; the collector console is English
whatever the request asks (its templates are not marked for translation, only the layout it
shares with the payer pages is).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from activities.currency import format_day, format_money, to_major
from ledger.models import ShortPayReason
from portal.page_language import ENGLISH, page_language, translations
from vocabulary import AWAITING_PAYMENT

PAGES_DIR = Path(__file__).resolve().parent.parent / "templates" / "pages"
# What every page may call, in every language.
GLOBALS = {
    "money": format_money,
    "day": format_day,
    "major": lambda minor, currency: str(to_major(minor, currency)),
    "AWAITING_PAYMENT": AWAITING_PAYMENT,
}
# The collector console's pages, English only.
CONSOLE_PAGES = ("console_", "_console_nav.html", "login.html")
# Why less than the balance is paid, or the invoice disputed, as a form's (value, label) choices.
REASON_CHOICES = [
    (reason.value, reason.value.replace("_", " ").capitalize()) for reason in ShortPayReason
]


@cache
def templates_for(language: str) -> Jinja2Templates:
    """The pages in one language; Jinja2Templates adds `url_for` to the environment."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PAGES_DIR),
        autoescape=jinja2.select_autoescape(),
        extensions=["jinja2.ext.i18n"],
    )
    environment.globals.update(GLOBALS)
    # New style: `_("... %(name)s", name=...)` escapes the values it fills in.
    environment.install_gettext_translations(translations(language), newstyle=True)
    return Jinja2Templates(env=environment)


def environment(language: str) -> jinja2.Environment:
    """The Jinja2 environment of one language, for rendering a page outside a request."""
    return templates_for(language).env


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
    *,
    locale: str | None = None,
) -> Response:
    """The page `name` as a response. `locale` is the customer's, for a page about one: it picks
    the page's language (`portal.page_language`) and formats amounts and dates."""
    settings = request.app.state.services.settings
    console = name.startswith(CONSOLE_PAGES)
    language = ENGLISH if console else page_language(request, locale)
    brand = {
        "company_name": settings.company_name,
        "brand_color": settings.brand_color,
        "logo_url": settings.logo_url,
        "support_email": settings.support_email or settings.email_from,
    }
    page = {"lang": language, "locale": locale}
    response = templates_for(language).TemplateResponse(
        request, name, {**brand, **page, **context}, status_code=status_code
    )
    response.headers["Content-Language"] = language
    if not console and locale is None:
        # Without a customer the browser's languages chose: a shared cache must key on them.
        response.headers["Vary"] = "Accept-Language"
    return response
