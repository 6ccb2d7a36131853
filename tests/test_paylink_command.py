"""`dunwise paylink`: a customer's pay link, checked against the ledger before it is printed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice
from paylinks import PayLinkExpired, read_pay_token
from settings import Settings
from tests.test_cli_errors import closed_port, dunwise, dunwise_each, dunwise_env


def ledger_with_two_customers(data_dir: Path) -> None:
    url = f"sqlite:///{data_dir / 'dunwise.db'}"
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        for customer, number in (("acme", "A-1"), ("beta", "B-1")):
            session.add(
                Customer(id=customer, name=customer.title(), email=f"ap@{customer}.example")
            )
            session.flush()
            session.add(
                Invoice(
                    number=number,
                    customer_id=customer,
                    currency="USD",
                    total_minor=1_000,
                    balance_minor=1_000,
                    issued_on=date(2026, 1, 1),
                    due_on=date(2026, 2, 1),
                    policy_name="standard",
                    policy_version=3,
                )
            )
    engine.dispose()


def test_paylink_prints_a_link_for_the_customer_and_refuses_the_rest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ledger_with_two_customers(data)
    env = dunwise_env(data, f"127.0.0.1:{closed_port()}")
    good, unknown, foreign, bad_days = dunwise_each(
        env,
        tmp_path,
        [
            ["paylink", "acme", "A-1", "--days", "3"],
            ["paylink", "nobody"],
            ["paylink", "acme", "B-1"],
            ["paylink", "acme", "--days", "0"],
        ],
    )
    assert good.returncode == 0, good.stderr
    link = good.stdout.strip()
    assert link.startswith("http://127.0.0.1:8000/pay/")
    settings = Settings(_env_file=None, data_dir=data)
    token = read_pay_token(settings, link.rsplit("/", 1)[1])
    assert (token.customer_id, token.invoice_numbers, token.valid_days) == ("acme", ["A-1"], 3)
    try:
        read_pay_token(settings, link.rsplit("/", 1)[1], now=datetime.now(UTC) + timedelta(days=4))
    except PayLinkExpired:
        pass
    else:
        raise AssertionError("a three-day link still opened after four days")

    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "dunwise paylink: no customer 'nobody' in the ledger",
    )
    assert foreign.returncode == 1 and "customer acme has no invoice B-1" in foreign.stderr
    assert bad_days.returncode == 1 and "--days must be between 1 and 3650" in bad_days.stderr


def test_paylink_revoke_ends_every_earlier_link(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ledger_with_two_customers(data)
    env = dunwise_env(data, f"127.0.0.1:{closed_port()}")
    revoked = dunwise(env, tmp_path, "paylink", "acme", "--revoke")
    assert revoked.returncode == 0, revoked.stderr
    assert "every pay link of customer acme given out so far is revoked" in revoked.stdout
    engine = make_engine(f"sqlite:///{data / 'dunwise.db'}")
    with session_scope(engine) as session:
        assert session.get(Customer, "acme").pay_links_revoked_before is not None
        assert session.get(Customer, "beta").pay_links_revoked_before is None
    engine.dispose()
