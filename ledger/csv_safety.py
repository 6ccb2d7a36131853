"""CSV cells that a spreadsheet shows as text and never runs as a formula.

Every CSV file dunwise writes goes through SpreadsheetSafeWriter (or `spreadsheet_safe` for
a single cell). A cell whose first character, after any spaces, is = + - @, a tab or a
carriage return gets a single quote in front, as OWASP advises against CSV injection: a
customer named `=HYPERLINK(...)` stays a name. A plain number such as -12.50 or the phone
number +14155550101 is left alone: spreadsheets read it as a number, never as a formula,
and the file stays importable as written.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def spreadsheet_safe(value: object) -> str:
    """The cell text for `value` (None is empty), quoted with ' if it could start a formula."""
    text = "" if value is None else str(value)
    if text.lstrip(" ").startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class SpreadsheetSafeWriter:
    """csv.writer whose every cell passes through `spreadsheet_safe`."""

    def __init__(self, handle: Any, **format_options: Any) -> None:
        self._writer = csv.writer(handle, **format_options)

    def writerow(self, row: Iterable[object]) -> Any:
        return self._writer.writerow([spreadsheet_safe(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)
