"""Reading an invoice file, CSV or JSON, into raw records: field name to value, by row.

Nothing here validates a value; that is ledger.import_rows. A record is a dict of the file's
non-blank values under lower-cased, stripped field names, numbered as ledger.import_rows
describes. A file that cannot be read as a whole (missing, not UTF-8, not CSV or JSON, no
header or a header missing a required column, not a JSON list) ends in ImportRejected;
a record with the wrong shape (too many CSV values, a JSON item that is not an object) is a
RowError beside the records.

Hostile files end in ImportRejected, never in another exception or a hang: JSON numbers with
a fraction are kept as the text written (JsonFraction, refused by the row), integers longer
than _JSON_INT_DIGITS stay Decimal (int() is slow on long ones), NaN and Infinity are
refused, and CSV errors and JSON nested too deep to parse are reported with the file's name.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledger.import_rows import ImportRejected, JsonFraction, RowError

REQUIRED_COLUMNS = (
    "invoice_number",
    "customer_id",
    "customer_name",
    "timezone",
    "currency",
    "amount",
    "issued_on",
    "due_on",
)
# email and phone are columns too, but a file may carry only one of them: each row needs one.
OPTIONAL_COLUMNS = ("email", "phone", "segment", "locale", "policy", "owner")
_JSON_INT_DIGITS = 40  # longer JSON integers stay Decimal: int() refuses > 4300 digits


def load_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    """Each record with its row number, and errors for the rows that are not records."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_records(path)
    if suffix == ".json":
        return _json_records(path)
    raise _file_error(f"{path.name}: unsupported file type {suffix!r}; use .csv or .json")


def _csv_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    records: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    try:
        # utf-8-sig: spreadsheets often start the file with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            _check_header(header)
            last_line = reader.line_num
            for values in reader:
                row_number, last_line = last_line + 1, reader.line_num
                if not any(value.strip() for value in values):
                    continue
                if len(values) > len(header):
                    errors.append(
                        RowError(
                            row_number,
                            "row",
                            f"{len(values)} values but the header has {len(header)} columns",
                        )
                    )
                records.append((row_number, _clean(dict(zip(header, values, strict=False)))))
    except OSError as error:
        raise _file_error(f"cannot read {path.name}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise _file_error(f"{path.name} is not UTF-8 text") from None
    except csv.Error as error:
        raise _file_error(f"{path.name} line {reader.line_num}: {error}") from None
    return records, errors


def _check_header(header: list[str]) -> None:
    if not any(header):
        raise _file_error("the file is empty: expected a header row")
    errors = [
        RowError(1, column, "column missing from the header")
        for column in REQUIRED_COLUMNS
        if column not in header
    ]
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    counts = Counter(header)
    errors.extend(
        RowError(1, column, "column appears more than once in the header")
        for column in sorted(c for c in known if counts[c] > 1)
    )
    if errors:
        raise ImportRejected(errors)


def _json_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    try:
        data = json.loads(
            path.read_text(encoding="utf-8-sig"),
            parse_float=JsonFraction,
            parse_int=_json_integer,
            parse_constant=_refuse_constant,
        )
    except OSError as error:
        raise _file_error(f"cannot read {path.name}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise _file_error(f"{path.name} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _file_error(
            f"{path.name} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}"
        ) from None
    except RecursionError:
        raise _file_error(f"{path.name}: JSON nested too deeply to be a list of invoices") from None
    except ValueError as error:  # from _refuse_constant
        raise _file_error(f"{path.name} is not valid JSON: {error}") from None
    if not isinstance(data, list):
        raise _file_error(f"{path.name}: expected a JSON list of invoice objects")
    records: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    for position, item in enumerate(data, start=1):
        if isinstance(item, dict):
            records.append((position, _clean({str(k).strip().lower(): v for k, v in item.items()})))
        else:
            errors.append(RowError(position, "row", "expected an object with the invoice fields"))
    return records, errors


def _json_integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= _JSON_INT_DIGITS else Decimal(text)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number in JSON")


def _clean(record: dict[str | None, Any]) -> dict[str, Any]:
    """Blank values count as missing, so a required field reports "missing"."""
    return {
        key: value
        for key, value in record.items()
        if key and value is not None and not (isinstance(value, str) and not value.strip())
    }


def _file_error(message: str) -> ImportRejected:
    return ImportRejected([RowError(0, "file", message)])
