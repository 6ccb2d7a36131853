"""The language a payer page speaks, and its gettext catalog.

The rule, first match wins:
1. `?lang=xx` in the URL, when xx is a shipped language: support staff see a page in the
   language they ask for (an unshipped one is ignored, never an error);
2. the customer's locale, when the page is about a known customer (`de-DE`, `de_AT` and `de`
   all mean German); a customer whose language is not shipped reads English;
3. otherwise (no customer: a bad link) the request's `Accept-Language`, its most preferred
   shipped language;
4. otherwise English.

Amounts and dates are not this module's business: they keep the customer's full locale.

Shipped languages are English, the language the page templates are written in, and each
language with a catalog `locales/<language>/LC_MESSAGES/pages.po`. Catalogs are read as they
are: compiled in memory at first use and cached, so there is no build step. An entry missing,
empty or marked fuzzy in a catalog shows in English.
"""

from __future__ import annotations

from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from fastapi import Request

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DOMAIN = "pages"
ENGLISH = "en"
LANGUAGES = (
    ENGLISH,
    *sorted(po.parent.parent.name for po in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")),
)
# A browser sends a handful of languages; anything past this many is noise or an attack.
MOST_ACCEPTED = 32


def page_language(request: Request, customer_locale: str | None = None) -> str:
    """The shipped language to render a payer page in, by the rule above."""
    asked = shipped(request.query_params.get("lang"))
    if asked:
        return asked
    if customer_locale is not None:
        return shipped(customer_locale) or ENGLISH
    return best_accepted(request.headers.get("accept-language", "")) or ENGLISH


def shipped(tag: str | None) -> str | None:
    """The shipped language of a locale or language tag (`fr_CA` -> fr), or None."""
    language = (tag or "").strip().replace("_", "-").split("-")[0].lower()
    return language if language in LANGUAGES else None


def best_accepted(header: str) -> str | None:
    """The shipped language an `Accept-Language` header prefers most, or None.

    `de-CH, fr;q=0.8, en;q=0.5` -> de. Equal weights keep the header's order; `q=0` means
    "not this one"; `*` and unshipped languages are passed over.
    """
    choices = []
    for position, item in enumerate(header.split(",")[:MOST_ACCEPTED]):
        tag, *params = item.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = shipped(tag)
        if language and quality > 0:
            choices.append((-quality, position, language))
    return min(choices)[2] if choices else None


@cache
def translations(language: str) -> NullTranslations:
    """The language's catalog, compiled from its .po file on first use. English has none: the
    templates' own text is the English."""
    po = LOCALES_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == ENGLISH or not po.is_file():
        return NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    # Fuzzy entries are left out (use_fuzzy=False), so gettext shows their English.
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)
