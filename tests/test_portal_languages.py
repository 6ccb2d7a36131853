"""The payer's pages in the payer's language: German, French and Spanish customers read their
portal, checkout, invoice and unsubscribe pages in their language with amounts and dates in
their locale; a link that names no customer follows the browser's Accept-Language; `?lang=`
overrides to a shipped language only; anything else is English. The catalogs translate every
string the templates mark, and every payer page renders in every language."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from activities.currency import format_money
from ledger.db import session_scope
from ledger.models import Customer
from paylinks import PAY_LINK_SALT, make_unsubscribe_link
from portal.page_language import LANGUAGES, LOCALES_DIR, best_accepted, shipped
from portal.pages import PAGES_DIR, REASON_CHOICES, environment
from tests.portal_harness import DUE, portal

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = ("de", "fr", "es")
# The account page's pay button in each language, and 1,250.00 USD as each locale writes it.
CONTINUE = {
    "en": "Continue to payment",
    "de": "Weiter zur Zahlung",
    "fr": "Continuer vers le paiement",
    "es": "Continuar al pago",
}
AMOUNT = {
    "en": "$1,250.00",
    "de": "1.250,00\xa0$",
    "fr": "1\u202f250,00\xa0$US",
    "es": "1.250,00\xa0US$",
}
DUE_DAY = {
    "en": "June 1, 2026",
    "de": "1. Juni 2026",
    "fr": "1 juin 2026",
    "es": "1 de junio de 2026",
}


async def _customer(p, customer_id: str, locale: str, number: str) -> str:
    """An invoice of 1,250.00 USD due June 1, 2026 for a customer in `locale`; their token."""
    await p.harness.start(number, due_on=DUE, amount_minor=125_000, customer_id=customer_id)
    with session_scope(p.harness.engine) as session:
        customer = session.get(Customer, customer_id)
        customer.locale = locale
        session.add(customer)
    return p.token(customer_id)


class _ThreeDaysAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 3 * 86400


def _lang(page) -> str:
    found = re.search(r'<html lang="([^"]+)">', page.text)
    assert found, page.text[:200]
    return found.group(1)


async def test_customers_read_their_pages_in_their_language(tmp_path) -> None:
    async with portal(tmp_path) as p:
        tokens = {
            "de": await _customer(p, "cust-de", "de-DE", "DE-1"),
            "fr": await _customer(p, "cust-fr", "fr_FR", "FR-1"),
            "es": await _customer(p, "cust-es", "es", "ES-1"),
            "en": await _customer(p, "cust-en", "en", "EN-1"),
        }
        for language, token in tokens.items():
            # The browser asks for German: the customer's own locale still decides.
            page = await p.http.get(f"/pay/{token}", headers={"Accept-Language": "de"})
            assert page.status_code == 200
            assert _lang(page) == language and page.headers["content-language"] == language
            assert CONTINUE[language] in page.text
            assert AMOUNT[language] in page.text and DUE_DAY[language] in page.text
        german = (await p.http.get(f"/pay/{tokens['de']}")).text
        assert "Offene Rechnungen" in german and "Zahlungsverlauf" in german
        assert "Continue to payment" not in german and "Open invoices" not in german

        invoice = await p.http.get(f"/pay/{tokens['de']}/invoices/DE-1")
        assert "Rechnung DE-1" in invoice.text and "fällig am 1. Juni 2026" in invoice.text

        started = await p.http.post(
            f"/api/portal/{tokens['fr']}/checkout",
            json={
                "items": [{"invoice": "FR-1", "amount": "1250.00"}],
                "method": "card",
                "request_id": str(uuid.uuid4()),
            },
        )
        assert started.status_code == 200, started.text
        checkout = await p.http.get(
            f"/pay/{tokens['fr']}/checkouts/{started.json()['checkout_id']}"
        )
        assert _lang(checkout) == "fr"
        assert f"Payer {AMOUNT['fr']}" in checkout.text and "Votre paiement" in checkout.text

        unsubscribe = make_unsubscribe_link(p.settings, "cust-es", "sms").rsplit("/", 1)[1]
        asked = await p.http.get(f"/unsubscribe/{unsubscribe}")
        assert _lang(asked) == "es"
        assert "¿Dejar de recibir recordatorios de pago por SMS?" in asked.text
        done = await p.http.post(f"/unsubscribe/{unsubscribe}")
        assert "Ya no recibirá recordatorios de pago por SMS" in done.text


async def test_lang_overrides_only_to_a_shipped_language_and_the_rest_is_english(
    tmp_path,
) -> None:
    async with portal(tmp_path) as p:
        german = await _customer(p, "cust-de", "de_AT", "DE-1")
        dutch = await _customer(p, "cust-nl", "nl-NL", "NL-1")

        french = await p.http.get(f"/pay/{german}?lang=fr")
        assert _lang(french) == "fr" and CONTINUE["fr"] in french.text
        # Support staff read the page in their language; amounts keep the customer's locale.
        english = await p.http.get(f"/pay/{german}?lang=en")
        assert CONTINUE["en"] in english.text
        assert format_money(125_000, "USD", "de_AT") in english.text  # Austrian: "1 250,00 $"
        unknown = await p.http.get(f"/pay/{german}?lang=xx")
        assert _lang(unknown) == "de" and CONTINUE["de"] in unknown.text

        # No Dutch catalog: a Dutch customer reads English, whatever the browser prefers.
        page = await p.http.get(f"/pay/{dutch}", headers={"Accept-Language": "de"})
        assert _lang(page) == "en" and CONTINUE["en"] in page.text
        assert _lang(await p.http.get(f"/pay/{dutch}?lang=zz")) == "en"


async def test_a_bad_link_follows_the_browser_and_an_old_one_its_customer(tmp_path) -> None:
    async with portal(tmp_path, pay_link_max_age_days=1) as p:
        german = await _customer(p, "cust-de", "de-DE", "DE-1")
        bad = "not-a-token"

        page = await p.http.get(f"/pay/{bad}", headers={"Accept-Language": "fr;q=0.5, de-CH"})
        assert page.status_code == 403 and _lang(page) == "de"
        assert "Dieser Zahlungslink ist ungültig." in page.text
        assert "Accept-Language" in page.headers["vary"]
        spanish = await p.http.get(f"/pay/{bad}", headers={"Accept-Language": "es-MX,es;q=0.9"})
        assert "Este enlace de pago no es válido." in spanish.text
        for header in ("nl, it;q=0.8", "de;q=0", "", "*"):
            english = await p.http.get(f"/pay/{bad}", headers={"Accept-Language": header})
            assert _lang(english) == "en", header
            assert "This pay link is not valid." in english.text
        override = await p.http.get(f"/pay/{bad}?lang=es", headers={"Accept-Language": "de"})
        assert _lang(override) == "es"

        unsubscribe = await p.http.get("/unsubscribe/nope", headers={"Accept-Language": "fr"})
        assert unsubscribe.status_code == 404
        assert "Ce lien de désinscription n’est pas valide." in unsubscribe.text

        # Expired and revoked links are genuine: their customer's language, not the browser's.
        old = URLSafeTimedSerializer(
            p.settings.secret_key.get_secret_value(), salt=PAY_LINK_SALT, signer=_ThreeDaysAgo
        ).dumps({"c": "cust-de", "i": []})
        expired = await p.http.get(f"/pay/{old}", headers={"Accept-Language": "fr"})
        assert expired.status_code == 410 and _lang(expired) == "de"
        assert "Dieser Zahlungslink ist abgelaufen; er war 1 Tag gültig." in expired.text
        assert "Neuen Link senden" in expired.text
        with session_scope(p.harness.engine) as session:
            customer = session.get(Customer, "cust-de")
            customer.pay_links_revoked_before = datetime.now(UTC)
            session.add(customer)
        revoked = await p.http.get(f"/pay/{german}", headers={"Accept-Language": "fr"})
        assert revoked.status_code == 410 and _lang(revoked) == "de"
        assert "Dieser Zahlungslink wurde widerrufen." in revoked.text
        renewed = await p.http.post(f"/pay/{german}/renew", headers={"Accept-Language": "fr"})
        assert "Bitte prüfen Sie Ihre E-Mails" in renewed.text


async def test_the_console_stays_english(tmp_path) -> None:
    async with portal(tmp_path) as p:
        login = await p.http.get("/console/login", headers={"Accept-Language": "de"})
        assert login.status_code == 200 and _lang(login) == "en"
        assert "Questions? Write to" in login.text


def test_accept_language_picks_the_most_preferred_shipped_language() -> None:
    assert best_accepted("de-CH, fr;q=0.8, en;q=0.5") == "de"
    assert best_accepted("nl, fr;q=0.4, es;q=0.6") == "es"
    assert best_accepted("fr;q=0.5, es;q=0.5") == "fr"  # a tie keeps the header's order
    assert best_accepted("de;q=0, *;q=0.1") is None
    assert best_accepted("de;q=oops, es") == "es"
    assert best_accepted("") is None
    assert [shipped(tag) for tag in ("de_AT", "FR-ca", "es", "pt-BR", None, "")] == [
        "de",
        "fr",
        "es",
        None,
        None,
        None,
    ]
    assert set(LANGUAGES) == {"en", *TRANSLATED}


def _extracted() -> set[str | tuple[str, ...]]:
    """The msgids the payer pages mark, extracted as `pybabel extract -F babel.cfg` does."""
    config = ROOT / "babel.cfg"
    options = {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true", "silent": "false"}
    assert "newstyle_gettext = true" in config.read_text()
    return {
        message[2]
        for message in extract_from_dir(
            str(PAGES_DIR), method_map=[("**.html", "jinja2")], options_map={"**.html": options}
        )
    }


def _catalog(path: Path):
    with path.open("rb") as source:
        return read_po(source)


def test_every_marked_string_is_in_the_template_and_translated_everywhere() -> None:
    template = {m.id for m in _catalog(LOCALES_DIR / "pages.pot") if m.id}
    extracted = _extracted()
    assert extracted == template, "re-run pybabel extract (README): locales/pages.pot is stale"
    for language in TRANSLATED:
        catalog = _catalog(LOCALES_DIR / language / "LC_MESSAGES" / "pages.po")
        missing = [msgid for msgid in template if not _translated(catalog.get(msgid))]
        assert not missing, f"{language}: untranslated {missing}"
        # Babel's checks: the same placeholders as the English, every plural form.
        assert not [(m.id, errors) for m, errors in catalog.check() if errors], language


def _translated(message) -> bool:
    if message is None or message.fuzzy:
        return False
    forms = message.string if isinstance(message.string, tuple) else (message.string,)
    return all(form.strip() for form in forms)


def _pages() -> list[tuple[str, dict]]:
    """Each payer page with a context that takes most of its branches."""
    plan = NS(
        invoice_number="A-1",
        due_now_minor=5_000,
        currency="USD",
        behind=True,
        next_due_on=date(2026, 4, 1),
        paid_minor=300,
        installments=[
            NS(due_on=date(2026, 4, 1), amount_minor=5_000, status=status, paid_minor=100)
            for status in ("paid", "part_paid", "overdue", "due", "upcoming")
        ],
    )
    invoice = NS(
        number="A-1",
        aging="31-60",
        status="disputed",
        issued_on=date(2026, 3, 1),
        due_on=date(2026, 4, 1),
        total_minor=125_000,
        balance_minor=125_000,
        pending_minor=500,
        currency="USD",
    )
    payment = NS(
        received_at=datetime(2026, 3, 3),
        amount_minor=999,
        currency="USD",
        method="card",
        invoices=["A-0"],
    )
    account = NS(
        name="Ada",
        locale=None,
        credits=[NS(amount_minor=1_234, currency="USD")],
        open_invoices=[invoice],
        pending=[payment],
        history=[payment],
    )
    checkout = NS(
        id=7,
        currency="USD",
        status="failed",
        failure_reason="Your card was declined.",
        credit_minor=100,
        surcharge_minor=50,
        charge_minor=125_000,
        method="card",
        payment_intent_id="pi_1",
    )
    items = [NS(invoice_number="A-1", reason_code="damaged_goods", note="two", amount_minor=1)]
    card = NS(id="pm_1", brand="visa", last4="4242", exp_month=1, exp_year=2030)
    line = NS(at=datetime(2026, 3, 5), kind="late_fee", detail=None, amount_minor=500)
    detail = NS(**{**vars(invoice), "status": "open", "lines": [line]})
    link = {"token": "TOKEN"}
    return [
        (
            "portal.html",
            {
                **link,
                "account": account,
                "rows": [invoice],
                "page": 1,
                "pages": 2,
                "pay_all": [("USD", [2, 250_000])],
                "selected": set(),
                "plans": {"A-1": plan},
                "entered": {},
                "reasons": REASON_CHOICES,
                "request_id": "r",
                "error": None,
                "surcharge_percent": 3,
                "bank_debit": True,
            },
        ),
        (
            "checkout.html",
            {
                **link,
                "checkout": checkout,
                "items": items,
                "cards": [card],
                "client_secret": None,
                "customer_name": "Ada",
                "stripe_js": "https://js.example/v3",
                "publishable_key": "pk",
                "error": None,
            },
        ),
        ("receipt.html", {**link, "checkout": NS(**{**vars(checkout), "status": "processing"})}),
        ("invoice.html", {**link, "invoice": detail}),
        ("link_problem.html", {**link, "problem": NS(message="x", renewable=True, valid_days=30)}),
        ("link_renewed.html", {}),
        ("unsubscribe.html", {**link, "customer_name": "Ada", "channel": "email"}),
    ]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_payer_page_renders_in_every_language(language: str) -> None:
    brand = {"company_name": "Example Co", "brand_color": "#1d4ed8", "support_email": "s@x.co"}
    for name, context in _pages():
        context = {"items": [], **brand, "lang": language, "locale": language, **context}
        html = environment(language).get_template(name).render(context)
        english = environment("en").get_template(name).render({**context, "lang": "en"})
        assert f'<html lang="{language}">' in html, name
        assert (html != english) == (language != "en"), name
