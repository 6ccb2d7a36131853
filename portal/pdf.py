"""PDF documents for payers: a statement of account and a single invoice.

Invariants:
- Amounts are formatted from integer minor units by `format_money` in the customer's locale,
  dates by `format_day`; nothing is rounded or converted between currencies.
- The same input gives the same bytes: the creation date comes from the input (the statement
  date, or the invoice's latest movement), never from the clock.
- Any text renders without error. A Unicode font (DejaVu Sans) is used when the machine has
  one; otherwise the built-in Helvetica in Windows-1252. A character the font cannot draw is
  shown as "?" (a currency symbol as its ISO code), never dropped silently; only invisible
  format marks (bidi marks, joiners) are left out. The document title keeps the exact
  customer name.
- Long tables break across pages and repeat their header row on every page.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

from activities.currency import format_day, format_money, parse_locale
from ledger.accounts import CustomerAccount
from ledger.invoice_details import InvoiceDetail

# (regular, bold) pairs to try; Debian's fonts-dejavu-core installs this one.
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
UNICODE_FONTS = ((_DEJAVU / "DejaVuSans.ttf", _DEJAVU / "DejaVuSans-Bold.ttf"),)
CORE_FONT_ENCODING = "windows-1252"  # Helvetica's encoding; unlike Latin-1 it has €
HISTORY_LIMIT = 20  # the statement lists this many of the newest payments
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_SPACES = {"\u202f", "\u2009", "\u2007", "\u00a0"}  # the narrow spaces Babel puts in amounts
_WIDTH = 190.0  # A4 less 10 mm margins
_AMOUNTS = {"Total", "Balance", "Amount"}  # right-aligned columns
# Each table's column headings and widths in mm; the widths of one table add up to _WIDTH.
_OPEN_INVOICE_COLUMNS = dict(Invoice=36, Issued=32, Due=32, Aging=20, Total=35, Balance=35)
_PENDING_COLUMNS = dict(Started=35, Method=35, Amount=35, Invoices=85)
_PAYMENT_COLUMNS = dict(Received=32, Method=25, Amount=33, Reference=50, Invoices=50)
_ACTIVITY_COLUMNS = dict(Date=35, Kind=35, Detail=85, Amount=35)


def _brand_rgb(brand_color: str) -> tuple[int, int, int]:
    if not isinstance(brand_color, str) or not _HEX_COLOR.fullmatch(brand_color):
        raise ValueError(f"brand_color {brand_color!r} is not a colour of the form #rrggbb")
    return int(brand_color[1:3], 16), int(brand_color[3:5], 16), int(brand_color[5:7], 16)


def _utc(moment: datetime) -> datetime:
    # The ledger stores UTC; a naive value is read as UTC so the bytes never depend on the host.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _label(word: str) -> str:
    return word.replace("_", " ").capitalize()  # "partially_paid" -> "Partially paid"


class _Document(FPDF):
    """An A4 page set with the company's header style and a page-numbered footer."""

    def __init__(self, company_name: str, brand_color: str, locale: str, created: datetime):
        rgb = _brand_rgb(brand_color)
        if not company_name.strip():
            raise ValueError("company_name is empty: the document needs a sender")
        super().__init__(format="A4")
        self.company_name, self.brand, self.locale = company_name, rgb, locale
        self.set_margins(10, 12, 10)
        self.set_auto_page_break(True, margin=16)
        self.set_creation_date(_utc(created))
        self.set_author(company_name)
        self.family, self._cmap = self._load_font()
        self.alias_nb_pages()
        self.add_page()

    def _load_font(self) -> tuple[str, dict[int, str] | None]:
        for regular, bold in UNICODE_FONTS:
            if regular.is_file() and bold.is_file():
                self.add_font("body", "", str(regular))
                self.add_font("body", "B", str(bold))
                return "body", self.fonts["body"].cmap
        self.core_fonts_encoding = CORE_FONT_ENCODING
        return "helvetica", None

    def _covers(self, ch: str) -> bool:
        if self._cmap is not None:
            return ord(ch) in self._cmap
        return ch.encode(CORE_FONT_ENCODING, errors="ignore") != b""

    def fit(self, text: str) -> str:
        """The text with every character the font cannot draw made visible as "?"."""
        out = []
        for ch in unicodedata.normalize("NFC", text):
            if unicodedata.category(ch) == "Cf":
                continue  # bidi marks and joiners: nothing to draw, and no shaping here to use them
            if ch in _SPACES and not self._covers(ch):
                out.append(" ")
            elif self._covers(ch) or ch == "\n":
                out.append(ch)
            else:
                out.append("?")
        return "".join(out)

    def money(self, amount_minor: int, currency: str) -> str:
        text = format_money(amount_minor, currency, self.locale)
        symbol = parse_locale(self.locale).currency_symbols.get(currency.upper(), currency)
        if not all(map(self._covers, symbol)):
            text = text.replace(symbol, currency.upper())
        return self.fit(text)

    def day(self, moment: date | datetime) -> str:
        if isinstance(moment, datetime):
            moment = _utc(moment).date()
        return self.fit(format_day(moment, self.locale))

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.family, "", 8)
        self.set_text_color(110)
        self.cell(0, 5, self.fit(f"{self.company_name} · page {self.page_no()} of {{nb}}"))

    def heading(self, title: str, fields: Sequence[tuple[str, str]]) -> None:
        self.set_font(self.family, "B", 18)
        self.set_text_color(*self.brand)
        self.multi_cell(0, 9, self.fit(self.company_name), new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0)
        self.set_font(self.family, "B", 14)
        self.multi_cell(0, 8, self.fit(title), new_x="LMARGIN", new_y="NEXT")
        for name, value in fields:
            self.set_font(self.family, "B", 10)
            self.cell(40, 6, self.fit(name))
            self.set_font(self.family, "", 10)
            self.multi_cell(0, 6, self.fit(value), new_x="LMARGIN", new_y="NEXT")

    def section(self, title: str) -> None:
        self.ln(4)
        self.set_font(self.family, "B", 12)
        self.set_text_color(*self.brand)
        self.cell(0, 8, self.fit(title), new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0)

    def note(self, text: str) -> None:
        self.set_font(self.family, "", 9)
        self.multi_cell(0, 5, self.fit(text), new_x="LMARGIN", new_y="NEXT")

    def grid(
        self,
        title: str,
        columns: dict[str, float],
        rows: Sequence[Sequence[str]],
        bold_rows: Sequence[Sequence[str]] = (),
        *,
        empty: str,
    ) -> None:
        """A titled table whose header row repeats on each page, or `empty` if it has no rows."""
        self.section(title)
        if not rows:
            return self.note(empty)
        self.set_font(self.family, "", 9)
        with self.table(
            col_widths=list(columns.values()),
            width=_WIDTH,
            text_align=[("RIGHT" if name in _AMOUNTS else "LEFT") for name in columns],
            line_height=5,
            headings_style=FontFace(emphasis="BOLD", fill_color=(230, 230, 230)),
        ) as table:
            table.row([self.fit(name) for name in columns])
            for cells in rows:
                table.row([self.fit(c) for c in cells])
            for cells in bold_rows:
                table.row([self.fit(c) for c in cells], style=FontFace(emphasis="BOLD"))


def statement_pdf(
    account: CustomerAccount, *, company_name: str, brand_color: str, today: date
) -> bytes:
    """The customer's statement of account on `today`: open invoices, credit and payments."""
    created = datetime.combine(today, time(), UTC)
    doc = _Document(company_name, brand_color, account.locale, created)
    doc.set_title(f"Statement for {account.name} ({account.customer_id})")
    doc.heading(
        "Statement of account",
        [
            ("Customer", account.name),
            ("Customer id", account.customer_id),
            ("Statement date", doc.day(today)),
        ],
    )
    money, day = doc.money, doc.day
    totals: dict[str, tuple[int, int]] = {}
    for inv in account.open_invoices:
        total, balance = totals.get(inv.currency.upper(), (0, 0))
        totals[inv.currency.upper()] = (total + inv.total_minor, balance + inv.balance_minor)
    doc.grid(
        "Open invoices",
        _OPEN_INVOICE_COLUMNS,
        [
            [inv.number, day(inv.issued_on), day(inv.due_on), inv.aging]
            + [money(inv.total_minor, inv.currency), money(inv.balance_minor, inv.currency)]
            for inv in account.open_invoices
        ],
        [
            [f"Total {code}", "", "", "", money(total, code), money(balance, code)]
            for code, (total, balance) in sorted(totals.items())
        ],
        empty="No open invoices.",
    )
    doc.section("Available credit")
    credits = [money(c.amount_minor, c.currency) for c in account.credits if c.amount_minor]
    doc.note("\n".join(credits) or "No credit available.")
    doc.grid(
        "Pending payments",
        _PENDING_COLUMNS,
        [
            [day(p.created_at), p.method.replace("_", " "), money(p.amount_minor, p.currency)]
            + [", ".join(p.invoices)]
            for p in account.pending
        ],
        empty="No payments in progress.",
    )
    doc.grid(
        "Recent payments",
        _PAYMENT_COLUMNS,
        [
            [day(p.received_at), p.method.replace("_", " "), money(p.amount_minor, p.currency)]
            + [" - ".join(filter(None, (p.reference, p.reason))), ", ".join(p.invoices)]
            for p in account.history[:HISTORY_LIMIT]
        ],
        empty="No payments received yet.",
    )
    if len(account.history) > HISTORY_LIMIT:
        doc.note(f"The {HISTORY_LIMIT} newest of {len(account.history)} payments.")
    return bytes(doc.output())


def invoice_pdf(
    detail: InvoiceDetail, *, company_name: str, brand_color: str, locale: str
) -> bytes:
    """One invoice: its dates, status, total, every money movement and the balance."""
    # Dated by its latest movement: the document changes only when the invoice does.
    latest = max((_utc(line.at) for line in detail.lines), default=None)
    created = latest or datetime.combine(detail.issued_on, time(), UTC)
    doc = _Document(company_name, brand_color, locale, created)
    doc.set_title(f"Invoice {detail.number} for {detail.customer_name} ({detail.customer_id})")
    money, day, code = doc.money, doc.day, detail.currency
    doc.heading(
        f"Invoice {detail.number}",
        [
            ("Customer", f"{detail.customer_name} ({detail.customer_id})"),
            ("Issued", day(detail.issued_on)),
            ("Due", day(detail.due_on)),
            ("Status", _label(detail.status)),
            ("Total", money(detail.total_minor, code)),
        ],
    )
    doc.grid(
        "Activity",
        _ACTIVITY_COLUMNS,
        [[day(detail.issued_on), "Invoice", "", money(detail.total_minor, code)]]
        + [
            [day(line.at), _label(line.kind), line.detail or "", money(line.amount_minor, code)]
            for line in detail.lines
        ],
        [["", "Balance", "", money(detail.balance_minor, code)]],
        empty="",
    )
    return bytes(doc.output())
