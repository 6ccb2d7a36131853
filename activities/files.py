"""Crash-safe local files: atomic writes and append-once JSON-lines journals."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Readers see the old file or the new one, never half of it, even after a crash.

    `durable=False` skips the fsyncs: for scratch folders such as a simulation's outbox.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            if durable:
                os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a sibling .lock file) across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def append_json_line_once(
    path: Path, record: dict[str, Any], key_field: str, *, durable: bool = True
) -> bool:
    """Append ``record`` unless a line with the same ``record[key_field]`` is already there.

    Returns True when the line was written. A line cut short by a crash is dropped before
    appending, so the file only ever holds whole lines.
    """
    key = record[key_field]
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    with locked(path):
        existing = path.read_bytes() if path.exists() else b""
        whole = existing[: existing.rfind(b"\n") + 1]
        if _holds_key(whole, key_field, key):
            return False
        with path.open("r+b" if existing else "wb") as journal:
            journal.truncate(len(whole))
            journal.seek(len(whole))
            journal.write(line)
            journal.flush()
            if durable:
                os.fsync(journal.fileno())
        return True


def _holds_key(lines: bytes, key_field: str, key: Any) -> bool:
    """Whether a line of the journal has `key` in `key_field`. Only lines in which the key's
    JSON text occurs are parsed: a journal of many thousand lines is searched at the speed of
    a byte scan, not of a JSON parser."""
    needle = json.dumps(key, ensure_ascii=False).encode("utf-8")
    start = lines.find(needle)
    while start >= 0:
        line_start = lines.rfind(b"\n", 0, start) + 1
        line_end = lines.find(b"\n", start)
        if json.loads(lines[line_start:line_end]).get(key_field) == key:
            return True
        start = lines.find(needle, line_end)
    return False
