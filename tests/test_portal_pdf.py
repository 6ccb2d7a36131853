"""Statement and invoice PDFs, read back with pypdf: text, amounts to the cent, pages, bytes."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from pypdf import PdfReader

import portal.pdf
from ledger.accounts import (
    AgingBucket,
    CreditBalance,
    CustomerAccount,
    OpenInvoice,
    PaymentRecord,
    PendingPayment,
)
from ledger.invoice_details import InvoiceDetail, InvoiceLine
from portal.pdf import HISTORY_LIMIT, invoice_pdf, statement_pdf

TODAY = date(2025, 3, 5)
BRAND = "#1a2b3c"
UNICODE_NAME = "Zoë Ünal 株式会社 😀"
HAS_UNICODE_FONT = any(r.is_file() and b.is_file() for r, b in portal.pdf.UNICODE_FONTS)


@pytest.fixture(params=["unicode-font", "core-font"])
def font(request, monkeypatch):
    """Run the test with the machine's Unicode font and again with the built-in fallback."""
    if request.param == "unicode-font" and not HAS_UNICODE_FONT:
        pytest.skip("no DejaVu Sans on this machine (Debian: fonts-dejavu-core)")
    if request.param == "core-font":
        monkeypatch.setattr(portal.pdf, "UNICODE_FONTS", ())
    return request.param


def pages(pdf: bytes) -> list[str]:
    # Babel's narrow spaces and pypdf's line breaks vary; compare words with single spaces.
    return [" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages]


def invoice(number: str, currency: str, total: int, balance: int, **kw) -> OpenInvoice:
    fields = dict(issued_on=date(2025, 1, 10), due_on=date(2025, 2, 9), status="open")
    fields.update(days_past_due=24, aging=AgingBucket.DAYS_1_30)
    return OpenInvoice(
        number=number, currency=currency, total_minor=total, balance_minor=balance, **fields | kw
    )


def account(name: str = "Ada Lovelace", locale: str = "en_US", **kw) -> CustomerAccount:
    fields = dict(
        open_invoices=[
            invoice("INV-001", "USD", 123456, 100001),
            invoice("INV-002", "USD", 99, 99, aging=AgingBucket.CURRENT, due_on=date(2025, 4, 1)),
            invoice("INV-003", "JPY", 500000, 123457),
            invoice("INV-004", "KWD", 1234567, 1000001, aging=AgingBucket.OVER_90),
        ],
        credits=[
            CreditBalance(currency="USD", amount_minor=2501),
            CreditBalance(currency="EUR", amount_minor=0),
        ],
        pending=[
            PendingPayment(
                checkout_id=7,
                payment_intent_id="pi_pending",
                currency="USD",
                amount_minor=4217,
                method="us_bank_account",
                created_at=datetime(2025, 3, 4, 23, 30, tzinfo=UTC),
                invoices=["INV-001", "INV-002"],
            )
        ],
        history=[
            PaymentRecord(
                received_at=datetime(2025, 2, 20, 9, 0, tzinfo=UTC),
                currency="USD",
                amount_minor=23455,
                method="card",
                reference="pi_paid",
                reason="short-shipped",
                invoices=["INV-001"],
            )
        ],
    )
    return CustomerAccount(
        customer_id="CUST-42",
        as_of=TODAY,
        name=name,
        email=None,
        phone=None,
        locale=locale,
        **fields | kw,
    )


def detail(lines: list[InvoiceLine], **kw) -> InvoiceDetail:
    fields = dict(customer_id="CUST-42", customer_name="Ada Lovelace", number="INV-9")
    fields.update(currency="EUR", total_minor=100000, balance_minor=61551, status="partially_paid")
    fields.update(issued_on=date(2025, 1, 10), due_on=date(2025, 2, 9))
    return InvoiceDetail(lines=lines, **fields | kw)


LINES = [
    InvoiceLine(at=datetime(2025, 2, 1, tzinfo=UTC), kind="payment", amount_minor=-40000),
    InvoiceLine(
        at=datetime(2025, 2, 15, 12, tzinfo=UTC), kind="late_fee", amount_minor=2551, detail="1.5%"
    ),
    InvoiceLine(at=datetime(2025, 2, 20, tzinfo=UTC), kind="credit", amount_minor=-1000),
]


def statement(acct: CustomerAccount, **kw) -> bytes:
    return statement_pdf(
        acct, **{"company_name": "Acme Ltd", "brand_color": BRAND, "today": TODAY} | kw
    )


def test_statement_lists_every_section_with_amounts_to_the_cent(font):
    (text,) = pages(statement(account()))
    assert "Acme Ltd Statement of account" in text
    assert "Customer Ada Lovelace Customer id CUST-42 Statement date March 5, 2025" in text
    assert "INV-001 January 10, 2025 February 9, 2025 1-30 $1,234.56 $1,000.01" in text
    assert "INV-002 January 10, 2025 April 1, 2025 current $0.99 $0.99" in text
    assert "INV-003 January 10, 2025 February 9, 2025 1-30 ¥500,000 ¥123,457" in text
    assert "INV-004 January 10, 2025 February 9, 2025 90+ KWD1,234.567 KWD1,000.001" in text
    # Totals per currency, never mixed: USD 1234.56 + 0.99 and 1000.01 + 0.99.
    assert "Total JPY ¥500,000 ¥123,457 Total KWD KWD1,234.567 KWD1,000.001" in text
    assert "Total USD $1,235.55 $1,001.00" in text
    assert "Available credit $25.01 Pending payments" in text  # the zero EUR credit is left out
    assert "March 4, 2025 us bank account $42.17 INV-001, INV-002" in text
    assert "February 20, 2025 card $234.55 pi_paid - short-shipped INV-001" in text
    assert "Acme Ltd · page 1 of 1" in text


def test_statement_in_other_locales_formats_money_and_dates_their_way(font):
    (text,) = pages(statement(account(locale="de_DE")))
    assert "Statement date 5. März 2025" in text
    assert "INV-001 10. Januar 2025 9. Februar 2025 1-30 1.234,56 $ 1.000,01 $" in text
    assert "Total USD 1.235,55 $ 1.001,00 $" in text

    (text,) = pages(
        statement(
            account(locale="fr_FR", credits=[CreditBalance(currency="INR", amount_minor=123456)])
        )
    )
    # French groups with a narrow no-break space; the core font draws it as a plain space.
    assert "INV-001 10 janvier 2025 9 février 2025 1-30 1 234,56 $US 1 000,01 $US" in text
    expected_rupees = "1 234,56 ₹" if font == "unicode-font" else "1 234,56 INR"
    assert f"Available credit {expected_rupees} Pending" in text


def test_empty_account_says_so_in_each_section(font):
    (text,) = pages(statement(account(open_invoices=[], credits=[], pending=[], history=[])))
    assert "Open invoices No open invoices. Available credit No credit available." in text
    assert (
        "Pending payments No payments in progress. Recent payments No payments received yet."
        in text
    )
    assert "Total" not in text


def test_history_shows_only_the_newest_payments(font):
    newest = datetime(2025, 3, 1, tzinfo=UTC)
    history = [
        PaymentRecord(
            received_at=newest - timedelta(days=i),
            currency="USD",
            amount_minor=100 + i,
            method="card",
            reference=f"ref-{i:02d}",
            invoices=["INV-001"],
        )
        for i in range(HISTORY_LIMIT + 5)
    ]
    text = " ".join(pages(statement(account(history=history))))
    shown = re.findall(r"ref-(\d\d)", text)
    assert shown == [f"{i:02d}" for i in range(HISTORY_LIMIT)]
    assert f"The {HISTORY_LIMIT} newest of {HISTORY_LIMIT + 5} payments." in text


def test_unicode_name_renders_without_losing_what_the_font_can_draw(font):
    pdf = statement(account(name=UNICODE_NAME))
    (text,) = pages(pdf)
    # Characters the font lacks become "?" (never silently dropped); the rest stays as written.
    assert re.search(r"Customer Zoë Ünal [株?][式?][会?][社?] [😀?] Customer id CUST-42", text)
    if font == "core-font":
        assert "Customer Zoë Ünal ???? ? Customer id" in text
    # The document title keeps the exact name for search and accessibility.
    assert PdfReader(io.BytesIO(pdf)).metadata.title == f"Statement for {UNICODE_NAME} (CUST-42)"


def test_combining_marks_and_bidi_marks_in_names(font):
    # "e" + combining diaeresis is composed; a right-to-left mark draws nothing and is dropped.
    # Arabic amounts from Babel start with one: "\u200f1,234.50\xa0€".
    (text,) = pages(statement(account(name="Zoe\u0308\u200f Brontë", locale="ar")))
    assert "Customer Zoë Brontë Customer id" in text
    assert "\u200f" not in text


@pytest.fixture(scope="module")
def thousand_invoices() -> tuple[CustomerAccount, list[str]]:
    rows = [
        invoice(f"INV-{i:04d}", ("USD", "EUR", "JPY")[i % 3], 10000 + i, 5000 + i)
        for i in range(1000)
    ]
    acct = account(open_invoices=rows)
    return acct, pages(statement(acct))


def test_thousand_invoices_break_across_pages_with_the_header_repeated(thousand_invoices):
    acct, texts = thousand_invoices
    assert len(texts) >= 10
    header = "Invoice Issued Due Aging Total Balance"
    for number, text in enumerate(texts, start=1):
        assert header in text, f"page {number} lacks the table header"
        assert f"page {number} of {len(texts)}" in text
    everything = " ".join(texts)
    assert re.findall(r"INV-\d{4}", everything) == [inv.number for inv in acct.open_invoices]
    # USD rows are i = 0, 3, ..., 999: 334 rows; sum(10000 + i) = 3,340,000 + 166,833 cents.
    assert "Total USD $35,068.33 $18,368.33" in everything
    assert "Total EUR €34,961.67 €18,311.67" in everything  # i = 1, 4, ..., 997: 333 rows
    assert "Total JPY ¥3,496,500 ¥1,831,500" in everything  # i = 2, 5, ..., 998: 333 rows


def test_same_input_gives_the_same_bytes(font):
    acct = account(name=UNICODE_NAME)
    first = statement(acct)
    assert statement(acct) == first
    assert statement(acct, today=TODAY + timedelta(days=1)) != first
    created = PdfReader(io.BytesIO(first)).metadata.creation_date
    assert created == datetime(2025, 3, 5, tzinfo=UTC)

    kw = dict(company_name="Acme Ltd", brand_color=BRAND, locale="en")
    assert invoice_pdf(detail(LINES), **kw) == invoice_pdf(detail(LINES), **kw)
    created = PdfReader(io.BytesIO(invoice_pdf(detail(LINES), **kw))).metadata.creation_date
    assert created == datetime(2025, 2, 20, tzinfo=UTC)  # the latest movement, not the clock
    created = PdfReader(io.BytesIO(invoice_pdf(detail([]), **kw))).metadata.creation_date
    assert created == datetime(2025, 1, 10, tzinfo=UTC)  # no movement yet: the issue date


def test_company_name_is_drawn_in_the_brand_colour(font):
    content = PdfReader(io.BytesIO(statement(account()))).pages[0].get_contents().get_data()
    colours = [tuple(map(float, m)) for m in re.findall(rb"([\d.]+) ([\d.]+) ([\d.]+) rg", content)]
    brand = (0x1A / 255, 0x2B / 255, 0x3C / 255)
    assert any(all(abs(a - b) < 0.001 for a, b in zip(c, brand, strict=True)) for c in colours)


def test_invoice_shows_dates_status_lines_and_balance(font):
    pdf = invoice_pdf(detail(LINES), company_name="Acme Ltd", brand_color=BRAND, locale="en_IE")
    (text,) = pages(pdf)
    assert "Acme Ltd Invoice INV-9 Customer Ada Lovelace (CUST-42)" in text
    assert (
        "Issued 10 January 2025 Due 9 February 2025 Status Partially paid Total €1,000.00" in text
    )
    assert "Date Kind Detail Amount 10 January 2025 Invoice €1,000.00" in text
    assert "1 February 2025 Payment -€400.00" in text
    assert "15 February 2025 Late fee 1.5% €25.51" in text
    assert "20 February 2025 Credit -€10.00 Balance €615.51" in text


def test_invoice_in_a_three_decimal_currency(font):
    lines = [InvoiceLine(at=datetime(2025, 2, 1, tzinfo=UTC), kind="payment", amount_minor=-1)]
    pdf = invoice_pdf(
        detail(lines, currency="KWD", total_minor=1000, balance_minor=999),
        company_name="Acme Ltd",
        brand_color=BRAND,
        locale="en",
    )
    (text,) = pages(pdf)
    assert "Payment -KWD0.001 Balance KWD0.999" in text


@pytest.mark.parametrize(
    "colour", ["red", "#12345", "#1234567", "1a2b3c", "#GG0000", " #1a2b3c", ""]
)
def test_a_brand_colour_not_of_the_form_rrggbb_is_refused_by_name(colour):
    with pytest.raises(ValueError, match=re.escape(f"brand_color {colour!r}")):
        statement(account(), brand_color=colour)
    with pytest.raises(ValueError, match=re.escape(f"brand_color {colour!r}")):
        invoice_pdf(detail(LINES), company_name="Acme Ltd", brand_color=colour, locale="en")


def test_an_empty_company_name_is_refused():
    with pytest.raises(ValueError, match="company_name is empty"):
        statement(account(), company_name="  ")


def test_an_unknown_currency_is_refused_by_code():
    with pytest.raises(ValueError, match="unknown currency 'XXQ'"):
        statement(account(open_invoices=[invoice("INV-1", "XXQ", 1, 1)]))
