"""What dunwise's embedded servers (Temporal, the local Stripe server) share as child
processes: one per data folder, started in a session of their own with their output in a log
file there, stopped within a grace period, their log's last word; and gone when their parent
dies, even by SIGKILL (`die_with_parent`)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

STOP_GRACE_SECONDS = 3.0
ORPHAN_CHECK_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1
# Looked up once here: between fork and exec a child should only make the call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """As a child's `preexec_fn` (between fork and exec): the kernel sends the child SIGTERM
    when the parent dies, however it dies (Linux)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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


async def stop_when_orphaned(parent: int) -> None:
    """In a child: a parent killed outright cannot stop it, so it notices and sends itself
    SIGTERM, to stop as it would when told."""
    while os.getppid() == parent:
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


async def stop(
    process: asyncio.subprocess.Process | None, grace: float = STOP_GRACE_SECONDS
) -> None:
    """SIGTERM, then SIGKILL after the grace period: no process is left behind."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


class ChildServer:
    """A server run as a child process for one data folder. A subclass names its files, takes
    the folder with `_lock_data_folder`, starts the process with `_spawn`; `close()` (also on
    leaving `async with`) stops it and lets the folder go."""

    lock_file: ClassVar[str]
    log_file: ClassVar[str]

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._process: asyncio.subprocess.Process | None = None
        self._lock: IO[str] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / self.log_file

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._stop_process()
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def _lock_data_folder(self) -> bool:
        """Take the data folder's lock; False when another process holds it."""
        self._lock = lock_data_folder(self.data_dir, self.lock_file)
        return self._lock is not None

    async def _spawn(self, command: Sequence[str], **options: Any) -> None:
        """Start the process in a session of its own (a terminal's Ctrl-C reaches the parent
        only), its output appended to the log, ended by the kernel if the parent dies."""
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
                **options,
            )

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        await stop(process)

    def _last_log_line(self) -> str:
        return last_log_line(self.log_path)


def last_log_line(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log"
    return lines[-1] if lines else "nothing in its log"
