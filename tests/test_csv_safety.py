"""CSV files dunwise writes never hand a spreadsheet a formula to run."""

from __future__ import annotations

import csv
import re
from datetime import date
from pathlib import Path

import pytest

import demo_data
from ledger.csv_safety import SpreadsheetSafeWriter, spreadsheet_safe
from ledger.imports import read_invoice_rows

ROOT = Path(__file__).resolve().parent.parent
FORMULA_START = re.compile(r"^ *[=+\-@\t\r]")
PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (
            '=HYPERLINK("http://evil.example","Pay here")',
            '\'=HYPERLINK("http://evil.example","Pay here")',
        ),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("  =1+1", "'  =1+1"),
        ("+1 415 555 2671", "'+1 415 555 2671"),
        # Plain numbers are read as numbers, never run: left as written so files re-import.
        ("-12.50", "-12.50"),
        ("+14155552671", "+14155552671"),
        (-5, "-5"),
        ("Acme Corp", "Acme Corp"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
    ],
)
def test_a_cell_that_could_start_a_formula_is_quoted(value: object, cell: str) -> None:
    assert spreadsheet_safe(value) == cell


def test_the_writer_quotes_every_cell_and_the_file_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = SpreadsheetSafeWriter(handle)
        writer.writerow(["customer_name", "amount"])
        writer.writerows([["=1+1", "10.00"], ["@evil", "-3.00"], ['Acme, "Inc"', "5"]])
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["customer_name", "amount"],
        ["'=1+1", "10.00"],
        ["'@evil", "-3.00"],
        ['Acme, "Inc"', "5"],
    ]


def test_demo_files_are_spreadsheet_safe_and_import_as_written(tmp_path: Path) -> None:
    invoices, payments = demo_data.write(tmp_path, today=date(2026, 3, 2))
    for path in (invoices, payments):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                for cell in row:
                    assert not FORMULA_START.match(cell) or PLAIN_NUMBER.fullmatch(cell), cell
    rows = read_invoice_rows(invoices)
    assert [row.invoice_number for row in rows] == [s.invoice_number for s in demo_data.SAMPLES]
    assert rows[0].phone == "+14155550101"


def test_every_csv_writer_in_the_project_is_the_safe_one() -> None:
    writers = re.compile(r"csv\.(writer|DictWriter)\(")
    offenders = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if not path.is_relative_to(ROOT / "tests")
        and not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
        and path != ROOT / "ledger" / "csv_safety.py"
        and writers.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "write CSV through ledger.csv_safety.SpreadsheetSafeWriter"
