"""`dunwise invoice message`: a one-off message from a template, through the installed command,
the invoice's workflow on a dev server with a real worker, ledger and outbox."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from tests.invoice_harness import dev_server_environment, invoice_harness
from tests.test_cli_errors import adunwise, closed_port, dunwise, dunwise_env, harness_env

DUE = date(2026, 4, 1)  # after the harness's pinned today: no reminder of its own goes out


def test_an_unknown_template_is_refused_before_temporal(tmp_path: Path) -> None:
    env = dunwise_env(tmp_path / "data", f"127.0.0.1:{closed_port()}")
    refused = dunwise(env, tmp_path, "invoice", "message", "A-2", "receipt")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "dunwise: invoice A-2: no message template 'receipt'; available: courtesy, due_today, "
        "final_notice, overdue_firm, overdue_friendly\n"
    )
    bad_channel = dunwise(
        env, tmp_path, "invoice", "message", "A-2", "courtesy", "--channel", "fax"
    )
    assert bad_channel.returncode == 2 and "invalid choice: 'fax'" in bad_channel.stderr


async def test_the_message_goes_out_once_per_request_id(tmp_path: Path) -> None:
    async with invoice_harness(tmp_path, environment=dev_server_environment) as h:
        await h.start("M-1", due_on=DUE, amount_minor=8_000)
        env = harness_env(h, tmp_path)
        outbox = h.settings.effective_outbox_dir
        argv = ("invoice", "message", "M-1", "overdue_friendly", "--actor", "cole")
        both = (*argv, "--channel", "email", "--channel", "sms", "--request-id", "m-1")
        for _ in range(2):
            sent = await adunwise(env, tmp_path, *both)
            assert sent.returncode == 0, sent.stderr
        lines = [line.split() for line in sent.stdout.splitlines()]
        messages = [line[1:4] for line in lines if len(line) > 3 and line[1] == "message"]
        assert sorted(messages) == [
            ["message", "email", "overdue_friendly"],
            ["message", "sms", "overdue_friendly"],
        ]
        assert len(list((outbox / "email").glob("*.eml"))) == 1
        assert len((outbox / "sms.jsonl").read_text().splitlines()) == 1

        default = await adunwise(env, tmp_path, "invoice", "message", "M-1", "courtesy")
        assert default.returncode == 0, default.stderr
        assert "request id " in default.stdout  # a new one, printed to repeat it safely
        assert len(list((outbox / "email").glob("*.eml"))) == 2  # email by default
        assert len((outbox / "sms.jsonl").read_text().splitlines()) == 1
