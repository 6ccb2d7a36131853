"""The embedded Temporal server's start when it loses a port: the `temporal` binary is a
shell script in front of the real one that fails its first start as the server does when
another program took the HTTP API port it picked."""

from __future__ import annotations

from pathlib import Path

import pytest

import embedded_temporal
from embedded_temporal import EmbeddedServer, EmbeddedServerError, installed_binary
from settings import Settings

PORT_TAKEN = (
    "failed listening for HTTP API on 127.0.0.1:42227: "
    "listen tcp 127.0.0.1:42227: bind: address already in use"
)


def failing_first(tmp_path: Path, message: str, *, times: int) -> Path:
    """A `temporal` that fails its first `times` starts with `message`, then is the real one;
    each start adds a line to tmp_path/starts."""
    real = installed_binary("temporal")
    script = tmp_path / "temporal"
    script.write_text(
        f"""#!/bin/sh
echo start >> "{tmp_path / "starts"}"
if [ "$(wc -l < "{tmp_path / "starts"}")" -le {times} ]; then
  echo '{message}' >&2
  exit 1
fi
exec "{real}" "$@"
"""
    )
    script.chmod(0o755)
    return script


def scratch(tmp_path: Path) -> Settings:
    return Settings.scratch(tmp_path / "data", task_queue="start").model_copy(
        update={"temporal_dev_port": 0, "temporal_ui": False}
    )


def starts(tmp_path: Path) -> int:
    return len((tmp_path / "starts").read_text().splitlines())


async def test_a_port_taken_while_starting_means_a_new_start(tmp_path, monkeypatch) -> None:
    script = failing_first(tmp_path, PORT_TAKEN, times=1)
    monkeypatch.setattr(embedded_temporal, "installed_binary", lambda name: str(script))
    async with EmbeddedServer(scratch(tmp_path), ui=False) as server:
        assert server.client is not None
        assert [run async for run in server.client.list_workflows()] == []  # it answers
    assert starts(tmp_path) == 2


async def test_any_other_failure_to_start_is_told_at_once(tmp_path, monkeypatch) -> None:
    script = failing_first(tmp_path, "Error: unable to open database file", times=5)
    monkeypatch.setattr(embedded_temporal, "installed_binary", lambda name: str(script))
    with pytest.raises(EmbeddedServerError, match="unable to open database file"):
        async with EmbeddedServer(scratch(tmp_path), ui=False):
            pass
    assert starts(tmp_path) == 1


async def test_a_port_lost_every_time_gives_up_after_three_starts(tmp_path, monkeypatch) -> None:
    script = failing_first(tmp_path, PORT_TAKEN, times=5)
    monkeypatch.setattr(embedded_temporal, "installed_binary", lambda name: str(script))
    with pytest.raises(EmbeddedServerError, match="address already in use"):
        async with EmbeddedServer(scratch(tmp_path), ui=False):
            pass
    assert starts(tmp_path) == embedded_temporal.LAUNCH_ATTEMPTS
