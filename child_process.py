"""What dunwise's embedded servers (Temporal, the local Stripe server) share as child
processes: one per data folder, stopped within a grace period, their log's last word."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from pathlib import Path
from typing import IO

STOP_GRACE_SECONDS = 3.0


def lock_data_folder(data_dir: Path, lock_file: str) -> IO[str] | None:
    """An exclusive lock on `data_dir/lock_file`, held while the returned file stays open;
    None when another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / lock_file).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


async def stop(process: asyncio.subprocess.Process | None) -> None:
    """SIGTERM, then SIGKILL after the grace period: no process is left behind."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def last_log_line(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log"
    return lines[-1] if lines else "nothing in its log"
