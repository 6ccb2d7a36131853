"""Every malformed import file in tests/corpus/imports/ is refused cleanly by `dunwise import`.

Each file runs through the command's own code path (commands.importing.import_invoices_file,
all or nothing) and through ledger.imports.import_file with partial=True, in a forked child
with a time limit. The import must end in its documented refusal: exit status 1 and error
lines that name the file, the row (or "file") and the field, including the one this table
expects; nothing is written to the ledger. Inputs too large to keep in the repository are
made here (GENERATED).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from commands.importing import import_invoices_file, policy_folder
from invoices import choose_policy
from ledger.db import make_engine, session_scope
from ledger.import_rows import InvoiceRow
from ledger.imports import import_file
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice
from policies.loader import load_policies
from settings import Settings
from tests.forked import run_forked

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "imports"
DUNWISE = [sys.executable, "-c", "import starter; starter.main()"]
TIME_LIMIT = 60  # seconds per file; each takes well under one
SEEDED_NUMBER = "SEED-1"  # already in the ledger: already_in_ledger.csv names it again

NOT_AMOUNT = "is not an amount like 1234.50"
TOO_LARGE = "is more than the largest amount the ledger holds in"
JSON_NUMBER = 'is a JSON number: write amounts as strings like "1234.50"'
NO_COLUMN = "column missing from the header"
NOT_UTF8 = "is not UTF-8 text"
NOT_A_DATE = "is not a date like 2026-01-31"
CONTROL = "contains the control character"
NOT_JSON = "is not valid JSON"

# file -> (where, part of the message): the error line reads "<file>: <where>: <message>".
EXPECTED: dict[str, tuple[str, str]] = {
    "already_in_ledger.csv": ("row 2, invoice_number", "SEED-1 is already in the ledger"),
    "amount_10e26.csv": ("row 2, amount", f"{TOO_LARGE} USD: 92233720368547758.07"),
    "amount_5000_digits.csv": ("row 2, amount", "(5000 characters) is too long to be an amount"),
    "amount_arabic_indic_digits.csv": ("row 2, amount", f"{NOT_AMOUNT} (write the digits 0-9)"),
    "amount_currency_symbol.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_decimal_comma.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_devanagari_digits.csv": ("row 2, amount", f"{NOT_AMOUNT} (write the digits 0-9)"),
    "amount_exponent.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_fullwidth_digits.csv": ("row 2, amount", f"{NOT_AMOUNT} (write the digits 0-9)"),
    "amount_hex.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_huge_with_bad_currency.csv": ("row 2, amount", "more than the ledger holds in any"),
    "amount_infinity.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_leading_dot.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_leading_space.csv": ("row 2, amount", "has spaces around it"),
    "amount_limit_plus_one_jpy.csv": ("row 2, amount", f"{TOO_LARGE} JPY: 9223372036854775807"),
    "amount_limit_plus_one_kwd.csv": ("row 2, amount", f"{TOO_LARGE} KWD: 9223372036854775.807"),
    "amount_limit_plus_one_usd.csv": ("row 2, amount", f"{TOO_LARGE} USD: 92233720368547758.07"),
    "amount_missing.csv": ("row 2, amount", "missing or empty"),
    "amount_nan.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_negative.csv": ("row 2, amount", "-5.00 must be greater than 0"),
    "amount_plus_sign.csv": ("row 2, amount", f"{NOT_AMOUNT} (write it without a + sign)"),
    "amount_surrounding_spaces.csv": ("row 2, amount", "has spaces around it"),
    "amount_tab_around.csv": ("row 2, amount", "has spaces around it"),
    "amount_thousands_separator.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_too_many_decimals_jpy.csv": ("row 2, amount", "JPY allows no decimals"),
    "amount_underscores.csv": ("row 2, amount", NOT_AMOUNT),
    "amount_zero.csv": ("row 2, amount", "0.00 must be greater than 0"),
    "bad_dates.csv": ("row 5, due_on", NOT_A_DATE),
    "bad_emails.csv": ("row 3, email", "not a valid email address"),
    "bad_locale.csv": ("row 2, locale", "at most 16 characters"),
    "bad_phones.csv": ("row 2, phone", "must start with + and the country code"),
    "below_default_policy_minimum.csv": ("row 2, policy", "below the minimum balance"),
    "binary_garbage.csv": ("file", NOT_UTF8),
    "bom_then_bad_amount.csv": ("row 2, amount", NOT_AMOUNT),
    "c1_control_in_name.csv": ("row 2, customer_name", f"{CONTROL} U+0085"),
    "carriage_return_in_invoice_number.csv": ("row 2, invoice_number", f"{CONTROL} U+000D"),
    "crlf_bad_amount.csv": ("row 2, amount", NOT_AMOUNT),
    "customer_conflict.csv": ("row 3, email", "customer C1 has email 'ap@acme.example' on row 2"),
    "delete_char_in_customer_id.csv": ("row 2, customer_id", f"{CONTROL} U+007F"),
    "double_bom.csv": ("row 1, invoice_number", NO_COLUMN),
    "due_before_issue.csv": ("row 2, due_on", "is before issued_on"),
    "duplicate_header_column.csv": ("row 1, amount", "appears more than once in the header"),
    "duplicate_invoice_numbers.csv": ("row 3, invoice_number", "INV-1 is also on row 2"),
    "duplicate_invoice_numbers_many.csv": ("row 41, invoice_number", "and 34 more of the file"),
    "empty.csv": ("file", "the file is empty"),
    "escape_sequence_in_name.csv": ("row 2, customer_name", f"{CONTROL} U+001B"),
    "header_repeated_many_times.csv": ("row 1, amount", "appears more than once in the header"),
    "invoices.txt": ("file", "unsupported file type '.txt'"),
    "invoices.xlsx": ("file", "unsupported file type '.xlsx'"),
    "json_amount_as_bool.json": ("row 1, amount", NOT_AMOUNT),
    "json_amount_as_list.json": ("row 1, amount", NOT_AMOUNT),
    "json_amount_as_object.json": ("row 1, amount", NOT_AMOUNT),
    "json_amount_fullwidth.json": ("row 1, amount", f"{NOT_AMOUNT} (write the digits 0-9)"),
    "json_amount_null.json": ("row 1, amount", "missing or empty"),
    "json_amount_spaces.json": ("row 1, amount", "has spaces around it"),
    "json_deep_nesting.json": ("file", "nested too deeply"),
    "json_deep_nesting_in_field.json": ("file", "nested too deeply"),
    "json_duplicate_numbers.json": ("row 2, invoice_number", "J-1 is also on row 1"),
    "json_empty.json": ("file", NOT_JSON),
    "json_float_1e308.json": ("row 1, amount", f"1e308 {JSON_NUMBER}"),
    "json_float_1e309.json": ("row 1, amount", f"1e309 {JSON_NUMBER}"),
    "json_float_amount.json": ("row 1, amount", f"1234.5 {JSON_NUMBER}"),
    "json_float_with_zero_fraction.json": ("row 1, amount", f"100.0 {JSON_NUMBER}"),
    "json_huge_int_invoice_number.json": ("row 1, invoice_number", "at most 64 characters"),
    "json_infinity.json": ("file", "-Infinity is not a number in JSON"),
    "json_int_10e26.json": ("row 1, amount", f"{TOO_LARGE} USD"),
    "json_int_5000_digits.json": ("row 1, amount", f"{TOO_LARGE} USD"),
    "json_int_date.json": ("row 1, issued_on", NOT_A_DATE),
    "json_int_limit_plus_one_jpy.json": ("row 1, amount", f"{TOO_LARGE} JPY"),
    "json_latin1.json": ("file", NOT_UTF8),
    "json_list_of_strings.json": ("row 2, row", "expected an object with the invoice fields"),
    "json_missing_fields.json": ("row 1, customer_name", "missing or empty"),
    "json_nan.json": ("file", "NaN is not a number in JSON"),
    "json_negative_int.json": ("row 1, amount", "-5 must be greater than 0"),
    "json_nested_lists.json": ("row 1, row", "expected an object with the invoice fields"),
    "json_not_a_list.json": ("file", "expected a JSON list of invoice objects"),
    "json_nul_in_name.json": ("row 1, customer_name", f"{CONTROL} U+0000"),
    "json_single_quotes.json": ("file", NOT_JSON),
    "json_trailing_comma.json": ("file", NOT_JSON),
    "json_truncated.json": ("file", NOT_JSON),
    "json_utf16.json": ("file", NOT_UTF8),
    "latin1_encoding.csv": ("file", NOT_UTF8),
    "long_customer_name.csv": ("row 2, customer_name", "at most 200 characters"),
    "long_invoice_number.csv": ("row 2, invoice_number", "at most 64 characters"),
    "long_segment.csv": ("row 2, segment", "at most 64 characters"),
    "missing_columns.csv": ("row 1, due_on", NO_COLUMN),
    "mixed_bad_rows.csv": ("row 4, currency", "missing or empty"),
    "newline_in_name.csv": ("row 2, customer_name", f"{CONTROL} U+000A"),
    "no_email_no_phone.csv": ("row 2, phone", "no email and no phone"),
    "no_extension": ("file", "unsupported file type ''"),
    "nul_byte_in_amount.csv": ("row 2, amount", NOT_AMOUNT),
    "nul_byte_in_name.csv": ("row 2, customer_name", f"{CONTROL} U+0000"),
    "only_blank_lines.csv": ("file", "the file is empty"),
    "only_bom.csv": ("file", "the file is empty"),
    "semicolon_separated.csv": ("row 1, invoice_number", NO_COLUMN),
    "tab_separated.csv": ("row 1, amount", NO_COLUMN),
    "too_many_values.csv": ("row 2, row", "12 values but the header has 10 columns"),
    "unknown_currency.csv": ("row 4, currency", "unknown currency 'ＵＳＤ'"),
    "unknown_policy.csv": ("row 2, policy", "unknown policy 'no-such-policy'"),
    "unknown_timezone.csv": ("row 3, timezone", "unknown time zone '../../../etc/passwd'"),
    "unterminated_quote.csv": ("row 2, amount", "missing or empty"),
    "utf16_encoding.csv": ("file", NOT_UTF8),
    "very_long_line_many_values.csv": ("row 2, row", "values but the header has 10 columns"),
}

HEADER = "invoice_number,customer_id,customer_name,email,timezone,currency,amount,issued_on,due_on"


def _row(**values: str) -> str:
    fields = dict(
        invoice_number="INV-1",
        customer_id="C1",
        customer_name="Acme Corp",
        email="ap@acme.example",
        timezone="UTC",
        currency="USD",
        amount="10.00",
        issued_on="2026-01-10",
        due_on="2026-02-09",
    )
    return ",".join({**fields, **values}.values())


# Too large to keep in the repository: name -> (content, where, part of the message).
GENERATED: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "field_over_the_csv_limit.csv": (
        lambda: f"{HEADER}\n{_row(customer_name='A' * 200_000)}\n".encode(),
        "file",
        "field larger than field limit",
    ),
    "name_of_100000_characters.csv": (
        lambda: f"{HEADER}\n{_row(customer_name='A' * 100_000)}\n".encode(),
        "row 2, customer_name",
        "at most 200 characters",
    ),
    "amount_of_100000_digits.json": (
        lambda: ('[{"amount": ' + "9" * 100_000 + "}]").encode(),
        "row 1, amount",
        "more than the ledger holds in any currency",
    ),
    "json_nested_100000_deep.json": (
        lambda: b"[" * 100_000 + b"]" * 100_000,
        "file",
        "nested too deeply",
    ),
    "rows_repeating_one_number_20000_times.csv": (
        lambda: "\n".join([HEADER] + [_row(amount="1e3")] * 20_000).encode(),
        "row 20001, invoice_number",
        "and 19994 more of the file",
    ),
}

ERROR_LINE = re.compile(r"(row \d+, [a-z_]+|file): \S")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A scratch data folder whose SQLite ledger holds one customer and invoice SEED-1."""
    settings = Settings.scratch(tmp_path_factory.mktemp("import-corpus"), task_queue="corpus")
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    with session_scope(engine) as session:
        session.add(Customer(id="seed", name="Seed Ltd", email="ap@seed.example"))
        session.flush()
        session.add(
            Invoice(
                number=SEEDED_NUMBER,
                customer_id="seed",
                currency="USD",
                total_minor=1000,
                balance_minor=1000,
                issued_on=date(2026, 1, 10),
                due_on=date(2026, 2, 9),
                policy_name="standard",
                policy_version=3,
            )
        )
    engine.dispose()
    # Once here, so every forked child starts with the modules and caches it needs loaded.
    _import_as_the_command_does(settings, CORPUS / "amount_nan.csv")
    return settings


def _ledger_counts(settings: Settings) -> tuple[int, int]:
    engine = make_engine(settings.effective_database_url)
    try:
        with Session(engine) as session:
            invoices = session.exec(select(sa.func.count()).select_from(Invoice)).one()
            customers = session.exec(select(sa.func.count()).select_from(Customer)).one()
        return invoices, customers
    finally:
        engine.dispose()


def _import_as_the_command_does(settings: Settings, path: Path) -> dict:
    """Runs in the child: `dunwise import FILE`, then import_file(partial=True) rolled back."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = asyncio.run(import_invoices_file(settings, path, partial=False))
    policies = load_policies(policy_folder(settings))

    def policy_for(row: InvoiceRow) -> tuple[str, int]:
        policy = choose_policy(policies, row, settings.default_policy)
        return policy.name, policy.version

    engine = make_engine(settings.effective_database_url)
    with Session(engine) as session:
        before = session.exec(select(sa.func.count()).select_from(Invoice)).one()
        report = import_file(session, path, policy_for, partial=True)
        written = session.exec(select(sa.func.count()).select_from(Invoice)).one() - before
        session.rollback()
    engine.dispose()
    return {
        "status": status,
        "stdout": stdout.getvalue(),
        "errors": stderr.getvalue().splitlines(),
        "partial_imported": len(report.imported),
        "partial_written": written,
        "partial_refused": len(report.refused),
    }


def _assert_refused(settings: Settings, path: Path, where: str, message: str) -> None:
    before = _ledger_counts(settings)
    result = run_forked(
        _import_as_the_command_does, settings, path, timeout=TIME_LIMIT, label=f"import {path}"
    )
    assert _ledger_counts(settings) == before, "a refused import wrote to the ledger"
    assert result["status"] == 1
    assert "imported 0 invoices" in result["stdout"]
    errors = result["errors"]
    assert errors, "refused without saying why"
    for line in errors:
        assert line.startswith(f"{path}: "), line
        assert ERROR_LINE.match(line.removeprefix(f"{path}: ")), line
        assert len(line) < 1000, f"an error line of {len(line)} characters"
    expected = f"{path}: {where}: "
    assert any(line.startswith(expected) and message in line for line in errors), (
        f"no {expected!r} ... {message!r} among:\n" + "\n".join(errors[:20])
    )
    # With --partial only rows without a problem go in, and nothing beyond them.
    assert result["partial_refused"] > 0
    assert result["partial_written"] == result["partial_imported"]


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(path.name for path in CORPUS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_import_file_is_refused(settings: Settings, name: str) -> None:
    where, message = EXPECTED[name]
    _assert_refused(settings, CORPUS / name, where, message)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_oversized_import_file_is_refused(settings: Settings, tmp_path: Path, name: str) -> None:
    content, where, message = GENERATED[name]
    path = tmp_path / name
    path.write_bytes(content())
    _assert_refused(settings, path, where, message)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("amount_10e26.csv", "row 2, amount: 100000000000000000000000000 is more than"),
        ("json_int_5000_digits.json", "row 1, amount: 9999999999"),
        ("json_float_1e309.json", f"row 1, amount: 1e309 {JSON_NUMBER}"),
    ],
)
def test_import_command_refuses_huge_numbers(tmp_path: Path, name: str, expected: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DUNWISE_")}
    env["DUNWISE_DATA_DIR"] = str(tmp_path / "data")
    path = CORPUS / name
    result = subprocess.run(
        [*DUNWISE, "import", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert f"{path}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "imported 0 invoices" in result.stdout
