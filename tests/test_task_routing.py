"""Task routing: queue members and account owners (ledger.routing), the rule that gives a new
task its assignee (ledger.assignment), round robin after an SLA breach, the import's owner
column, the `dunwise queue` and `dunwise customer owner` commands, and migration 0010; on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlmodel import Session, select

import starter
from ledger.db import make_engine, session_scope
from ledger.imports import import_file
from ledger.lifecycle import close_collector_tasks, open_collector_task
from ledger.migrate import alembic_config, upgrade
from ledger.models import AppUser, AuditEvent, CollectorTask, Customer, Invoice, QueueMember, Role
from ledger.requests import CollectorOutcome, CollectorTaskRequest
from ledger.routing import (
    RoutingError,
    add_queue_members,
    owner_of,
    queues,
    remove_queue_members,
    set_customer_owner,
    working_members,
)
from ledger.tasks import claim, move_breached, reassign
from settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
DUNWISE = str(Path(sys.executable).with_name("dunwise"))
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ANN, BOB, CAROL = "ann@example.com", "bob@example.com", "carol@example.com"


# --- building a ledger ---------------------------------------------------------------------


def add_user(engine: sa.Engine, email: str, role: Role = Role.COLLECTOR, **fields) -> int:
    with session_scope(engine) as session:
        user = AppUser(email=email, password_hash="argon2-not-used-here", role=role, **fields)
        session.add(user)
        session.flush()
        return int(user.id)


def change_user(engine: sa.Engine, user_id: int, **fields) -> None:
    with session_scope(engine) as session:
        user = session.get(AppUser, user_id)
        for name, value in fields.items():
            setattr(user, name, value)
        session.add(user)


def add_invoice(engine: sa.Engine, number: str, customer: str = "C1") -> None:
    with session_scope(engine) as session:
        if session.get(Customer, customer) is None:
            session.add(Customer(id=customer, name=f"Customer {customer}"))
            session.flush()
        session.add(
            Invoice(
                number=number,
                customer_id=customer,
                currency="USD",
                total_minor=10_000,
                balance_minor=10_000,
                issued_on=date(2026, 1, 1),
                due_on=date(2026, 2, 1),
                policy_name="standard",
                policy_version=1,
            )
        )


def request(number: str, key: str, queue: str = "collections") -> CollectorTaskRequest:
    return CollectorTaskRequest(
        invoice_number=number,
        queue=queue,
        priority="high",
        due_at=NOW + timedelta(days=2),
        idempotency_key=key,
    )


def open_task(engine: sa.Engine, number: str, key: str, queue: str = "collections") -> int:
    with session_scope(engine) as session:
        return open_collector_task(session, request(number, key, queue))


def do(engine: sa.Engine, change, *args, **kwargs):
    with session_scope(engine) as session:
        return change(session, *args, **kwargs)


def stored(engine: sa.Engine, task_id: int) -> CollectorTask:
    with Session(engine) as session:
        task = session.get(CollectorTask, task_id)
        assert task is not None
        session.expunge(task)
        return task


def assignee(engine: sa.Engine, task_id: int) -> str | None:
    with Session(engine) as session:
        task = session.get(CollectorTask, task_id)
        user = session.get(AppUser, task.assignee_id) if task.assignee_id else None
        return user.email if user else None


def open_tasks(engine: sa.Engine, number: str) -> list[int]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(CollectorTask.id)
                .join(Invoice, Invoice.id == CollectorTask.invoice_id)
                .where(Invoice.number == number, CollectorTask.status == "open")
            )
        )


def events(engine: sa.Engine, *prefixes: str) -> list[tuple[str, str, dict]]:
    """(action, actor, detail) of every audit event whose action starts with a prefix."""
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
    return [
        (e.action, e.actor, json.loads(e.detail))
        for e in rows
        if e.action.startswith(prefixes) and e.action != "collector_task_opened"
    ]


def assigned(engine: sa.Engine) -> list[tuple[int, str, str | None]]:
    """(task, rule, assignee) of each assignment by rule, in order."""
    return [
        (detail["task_id"], detail.get("rule"), detail["after"])
        for action, _, detail in events(engine, "collector_task_assigned")
    ]


@pytest.fixture
def people(engine: sa.Engine) -> dict[str, int]:
    return {
        "ann": add_user(engine, ANN),
        "bob": add_user(engine, BOB),
        "carol": add_user(engine, CAROL, Role.ADMIN),
        "vic": add_user(engine, "vic@example.com", Role.VIEWER),
        "dan": add_user(engine, "dan@example.com", disabled=True),
    }


# --- queue members -------------------------------------------------------------------------


def test_queue_members_are_added_once_listed_and_removed(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    added = do(engine, add_queue_members, "collections", [" Ann@Example.com", CAROL, ANN])
    assert added == [ANN, CAROL]
    assert do(engine, add_queue_members, "collections", [CAROL], actor="admin@example.com") == []
    do(engine, add_queue_members, "key-accounts", [BOB])
    with Session(engine) as session:
        listed = [(v.queue, [m.email for m in v.members]) for v in queues(session)]
        assert working_members(session, "collections") == [people["ann"], people["carol"]]
    assert listed == [("collections", [ANN, CAROL]), ("key-accounts", [BOB])]

    assert do(engine, remove_queue_members, "collections", [ANN.upper()]) == [ANN]
    with Session(engine) as session:
        assert working_members(session, "collections") == [people["carol"]]
    assert events(engine, "queue_member") == [
        (
            "queue_member_added",
            "operator",
            {"queue": "collections", "user_id": people["ann"], "email": ANN},
        ),
        (
            "queue_member_added",
            "operator",
            {"queue": "collections", "user_id": people["carol"], "email": CAROL},
        ),
        (
            "queue_member_added",
            "operator",
            {"queue": "key-accounts", "user_id": people["bob"], "email": BOB},
        ),
        (
            "queue_member_removed",
            "operator",
            {"queue": "collections", "user_id": people["ann"], "email": ANN},
        ),
    ]


@pytest.mark.parametrize(
    ("queue", "emails", "message"),
    [
        (
            "collections",
            ["nobody@example.com"],
            "queue 'collections': no user 'nobody@example.com' in the ledger",
        ),
        (
            "collections",
            ["vic@example.com"],
            "queue 'collections': user vic@example.com is a viewer and cannot work tasks",
        ),
        (
            "collections",
            ["dan@example.com"],
            "queue 'collections': user dan@example.com is disabled and cannot work tasks",
        ),
        (
            "collections",
            ["not-an-email"],
            "queue 'collections': 'not-an-email' is not an email address",
        ),
        ("collections", [], "queue 'collections': name at least one user by email"),
        ("q" * 65, [ANN], "queue name: 'qqqqq.* is longer than 64 characters"),
        ("Collections", [ANN], "queue name: 'Collections' is not a slug"),
        ("", [ANN], "queue name: '' is not a slug"),
        ("two words", [ANN], "queue name: 'two words' is not a slug"),
    ],
)
def test_adding_members_refuses_bad_input_whole(
    engine: sa.Engine, people: dict[str, int], queue: str, emails: list[str], message: str
) -> None:
    # A good user named first is not added either: the request is refused whole.
    with pytest.raises(RoutingError, match=message):
        do(engine, add_queue_members, queue, [ANN, *emails] if emails else [])
    with Session(engine) as session:
        assert session.exec(select(QueueMember)).all() == []
    assert events(engine, "queue_member") == []


def test_removing_refuses_non_members_and_unknown_users_whole(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    do(engine, add_queue_members, "collections", [ANN])
    with pytest.raises(RoutingError, match="queue 'collections': bob@example.com is not a member"):
        do(engine, remove_queue_members, "collections", [ANN, BOB])
    with pytest.raises(RoutingError, match="no user 'nobody@example.com' in the ledger"):
        do(engine, remove_queue_members, "collections", [ANN, "nobody@example.com"])
    with pytest.raises(RoutingError, match="queue 'nowhere': ann@example.com is not a member"):
        do(engine, remove_queue_members, "nowhere", [ANN])
    with Session(engine) as session:
        assert working_members(session, "collections") == [people["ann"]]


def test_members_who_can_no_longer_work_are_listed_and_skipped(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    do(engine, add_queue_members, "collections", [ANN, BOB, CAROL])
    change_user(engine, people["ann"], disabled=True)
    change_user(engine, people["bob"], role=Role.VIEWER)
    with Session(engine) as session:
        (view,) = queues(session)
        assert working_members(session, "collections") == [people["carol"]]
    assert [(m.email, m.role, m.disabled, m.works_tasks) for m in view.members] == [
        (ANN, "collector", True, False),
        (BOB, "viewer", False, False),
        (CAROL, "admin", False, True),
    ]
    # A member who cannot work tasks may still be taken out.
    assert do(engine, remove_queue_members, "collections", [ANN, BOB]) == [ANN, BOB]


# --- account owners ------------------------------------------------------------------------


def test_a_customer_owner_is_set_changed_and_cleared_with_audit(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    assert do(engine, set_customer_owner, "C1", "ANN@example.com") == ANN
    assert do(engine, set_customer_owner, "C1", ANN) == ANN  # the same again: nothing
    assert do(engine, set_customer_owner, "C1", CAROL, actor="carol@example.com") == CAROL
    with Session(engine) as session:
        assert owner_of(session, "C1") == CAROL
    assert do(engine, set_customer_owner, "C1", None) is None
    assert do(engine, set_customer_owner, "C1", None) is None
    with Session(engine) as session:
        assert session.get(Customer, "C1").owner_email is None
    assert events(engine, "customer_owner") == [
        ("customer_owner_changed", "operator", {"customer_id": "C1", "before": None, "after": ANN}),
        (
            "customer_owner_changed",
            "carol@example.com",
            {"customer_id": "C1", "before": ANN, "after": CAROL},
        ),
        (
            "customer_owner_changed",
            "operator",
            {"customer_id": "C1", "before": CAROL, "after": None},
        ),
    ]


@pytest.mark.parametrize(
    ("customer", "email", "message"),
    [
        ("C9", ANN, "customer 'C9' does not exist"),
        ("C1", "nobody@example.com", "customer C1: no user 'nobody@example.com' in the ledger"),
        ("C1", "vic@example.com", "customer C1: user vic@example.com is a viewer and cannot work"),
        ("C1", "dan@example.com", "customer C1: user dan@example.com is disabled"),
        ("C1", "@example.com", "customer C1: '@example.com' is not an email address"),
    ],
)
def test_an_owner_must_be_a_user_who_can_work_tasks(
    engine: sa.Engine, people: dict[str, int], customer: str, email: str, message: str
) -> None:
    add_invoice(engine, "INV-1")
    with pytest.raises(RoutingError, match=message):
        do(engine, set_customer_owner, customer, email)
    with Session(engine) as session:
        assert session.get(Customer, "C1").owner_email is None
    assert events(engine, "customer_owner") == []


# --- the rule when a task opens ------------------------------------------------------------


def test_a_new_task_supersedes_the_open_one_and_keeps_its_assignee(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    do(engine, set_customer_owner, "C1", BOB)  # an owner, but the previous assignee comes first
    first = open_task(engine, "INV-1", "INV-1:escalation:1")
    assert assignee(engine, first) == BOB
    do(engine, reassign, first, people["ann"], CAROL)  # an admin hands it to ann
    second = open_task(engine, "INV-1", "INV-1:broken-promise:2026-03-05", queue="payments")
    assert open_tasks(engine, "INV-1") == [second]
    old = stored(engine, first)
    assert (old.status, old.outcome, old.assignee_id) == ("closed", "superseded", people["ann"])
    assert old.closed_at is not None and old.closed_at.tzinfo is not None
    new = stored(engine, second)
    assert (new.queue, new.assignee_id, new.claimed_at is not None) == (
        "payments",
        people["ann"],
        True,
    )
    assert events(engine, "collector_task_closed", "collector_task_assigned")[-2:] == [
        (
            "collector_task_closed",
            "system",
            {"task_id": first, "outcome": "superseded", "note": None, "superseded_by": second},
        ),
        (
            "collector_task_assigned",
            "system",
            {
                "task_id": second,
                "queue": "payments",
                "before": None,
                "after": ANN,
                "rule": "previous_task",
            },
        ),
    ]


def test_every_other_open_task_closes_and_the_most_recent_one_leads(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    older = open_task(engine, "INV-1", "k-older")
    # Two open tasks on one invoice, as a ledger from before this rule may hold.
    with session_scope(engine) as session:
        invoice = session.exec(select(Invoice)).one()
        legacy = CollectorTask(
            invoice_id=invoice.id,
            queue="collections",
            priority="normal",
            due_at=NOW,
            idempotency_key="k-legacy",
            assignee_id=people["bob"],
        )
        session.add(legacy)
        session.flush()
        legacy_id = legacy.id
    do(engine, claim, older, people["ann"], ANN)
    newest = open_task(engine, "INV-1", "k-newest")
    assert open_tasks(engine, "INV-1") == [newest]
    assert {stored(engine, t).outcome for t in (older, legacy_id)} == {"superseded"}
    assert assignee(engine, newest) == BOB  # the more recent of the two it superseded
    closed = [d["task_id"] for a, _, d in events(engine, "collector_task_closed")]
    assert closed == [legacy_id, older]


def test_a_previous_assignee_who_cannot_work_gives_way_to_the_owner(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    first = open_task(engine, "INV-1", "k1")
    do(engine, claim, first, people["ann"], ANN)
    do(engine, set_customer_owner, "C1", CAROL)
    change_user(engine, people["ann"], disabled=True)
    second = open_task(engine, "INV-1", "k2")
    assert assignee(engine, second) == CAROL
    assert assigned(engine)[-1] == (second, "owner", CAROL)


def test_an_unassigned_previous_task_gives_way_to_the_owner(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    first = open_task(engine, "INV-1", "k1")
    assert assignee(engine, first) is None
    do(engine, set_customer_owner, "C1", BOB)
    second = open_task(engine, "INV-1", "k2")
    assert (stored(engine, first).outcome, assignee(engine, second)) == ("superseded", BOB)


def test_the_owner_comes_before_round_robin(engine: sa.Engine, people: dict[str, int]) -> None:
    add_invoice(engine, "INV-1", customer="C1")
    add_invoice(engine, "INV-2", customer="C2")
    do(engine, add_queue_members, "collections", [ANN])
    do(engine, set_customer_owner, "C1", BOB)
    owned = open_task(engine, "INV-1", "k1")
    other = open_task(engine, "INV-2", "k2")
    assert (assignee(engine, owned), assignee(engine, other)) == (BOB, ANN)
    assert assigned(engine) == [(owned, "owner", BOB), (other, "round_robin", ANN)]


@pytest.mark.parametrize("change", ["viewer", "disabled", "deleted email"])
def test_an_owner_who_cannot_work_gives_way_to_round_robin(
    engine: sa.Engine, people: dict[str, int], change: str
) -> None:
    add_invoice(engine, "INV-1")
    do(engine, add_queue_members, "collections", [CAROL])
    do(engine, set_customer_owner, "C1", BOB)
    if change == "viewer":
        change_user(engine, people["bob"], role=Role.VIEWER)
    elif change == "disabled":
        change_user(engine, people["bob"], disabled=True)
    else:
        change_user(engine, people["bob"], email="robert@example.com")
    task = open_task(engine, "INV-1", "k1")
    assert assigned(engine) == [(task, "round_robin", CAROL)]


def test_round_robin_skips_members_who_cannot_work_and_spreads_the_load(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    do(engine, add_queue_members, "collections", [ANN, BOB, CAROL])
    change_user(engine, people["bob"], disabled=True)
    tasks = []
    for n in range(4):
        add_invoice(engine, f"INV-{n}", customer=f"C{n}")
        tasks.append(open_task(engine, f"INV-{n}", f"k{n}"))
    assert [assignee(engine, t) for t in tasks] == [ANN, CAROL, ANN, CAROL]
    change_user(engine, people["carol"], role=Role.VIEWER)
    add_invoice(engine, "INV-9", customer="C9")
    assert assignee(engine, open_task(engine, "INV-9", "k9")) == ANN


def test_without_a_rule_that_applies_a_task_stays_unassigned(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    do(engine, add_queue_members, "key-accounts", [ANN])  # another queue's members
    do(engine, add_queue_members, "collections", [BOB])
    change_user(engine, people["bob"], role=Role.VIEWER)
    task = open_task(engine, "INV-1", "k1")
    assert stored(engine, task).assignee_id is None
    assert events(engine, "collector_task_assigned") == []


def test_a_repeated_key_neither_supersedes_nor_assigns(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    first = open_task(engine, "INV-1", "k1")
    do(engine, add_queue_members, "collections", [ANN])
    second = open_task(engine, "INV-1", "k2")
    before = events(engine, "collector_task", "queue")
    assert open_task(engine, "INV-1", "k1") == first  # the workflow retried its activity
    assert open_task(engine, "INV-1", "k2") == second
    assert open_tasks(engine, "INV-1") == [second]
    assert stored(engine, first).assignee_id is None
    assert events(engine, "collector_task", "queue") == before


def test_tasks_opening_at_once_on_one_invoice_leave_one_open(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    outcome: list[object] = []

    def second_opens() -> None:
        try:
            outcome.append(open_task(engine, "INV-1", "k2"))
        except Exception as error:  # reported below, not lost in the thread
            outcome.append(error)

    with session_scope(engine) as session:
        first = open_collector_task(session, request("INV-1", "k1"))
        other = threading.Thread(target=second_opens)
        other.start()
        other.join(1.0)
        assert other.is_alive(), "the second task must wait for the first to commit"
    other.join(60)
    (second,) = outcome
    assert isinstance(second, int), second
    assert open_tasks(engine, "INV-1") == [second]
    assert stored(engine, first).outcome == "superseded"


def test_closing_the_invoice_tasks_still_closes_the_one_open_task(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    open_task(engine, "INV-1", "k1")
    open_task(engine, "INV-1", "k2")
    outcome = CollectorOutcome(invoice_number="INV-1", outcome="resumed", actor=ANN)
    assert do(engine, close_collector_tasks, outcome) == 1
    assert open_tasks(engine, "INV-1") == []


# --- SLA breach ----------------------------------------------------------------------------


def test_a_breached_task_goes_round_robin_in_the_supervisor_queue_never_back(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    do(engine, add_queue_members, "collections", [ANN])
    do(engine, add_queue_members, "collections-supervisor", [ANN, CAROL])
    task = open_task(engine, "INV-1", "k1")
    assert assignee(engine, task) == ANN
    later = NOW + timedelta(days=3)
    assert do(engine, move_breached, task, "collections-supervisor", later) is True
    row = stored(engine, task)
    assert (row.queue, row.escalated_from_queue, row.breached_at) == (
        "collections-supervisor",
        "collections",
        later,
    )
    assert assignee(engine, task) == CAROL  # not ann, who let it breach, though less loaded
    actions = [(a, d.get("after"), d.get("rule")) for a, _, d in events(engine, "collector_task")]
    assert actions == [
        ("collector_task_assigned", ANN, "round_robin"),
        ("collector_task_breached", "collections-supervisor", None),
        ("collector_task_assigned", CAROL, "round_robin"),
    ]


@pytest.mark.parametrize("supervisors", ["none", "only who let it breach", "disabled"])
def test_a_breached_task_without_another_supervisor_stays_unassigned(
    engine: sa.Engine, people: dict[str, int], supervisors: str
) -> None:
    add_invoice(engine, "INV-1")
    task = open_task(engine, "INV-1", "k1")
    do(engine, claim, task, people["ann"], ANN)
    if supervisors == "only who let it breach":
        do(engine, add_queue_members, "supervisors", [ANN])
    elif supervisors == "disabled":
        do(engine, add_queue_members, "supervisors", [BOB])
        change_user(engine, people["bob"], disabled=True)
    assert do(engine, move_breached, task, "supervisors", NOW + timedelta(days=3)) is True
    assert stored(engine, task).assignee_id is None
    assert [a for a, _, _ in events(engine, "collector_task")] == [
        "collector_task_claimed",
        "collector_task_breached",
    ]


def test_a_superseded_task_is_not_breached(engine: sa.Engine, people: dict[str, int]) -> None:
    add_invoice(engine, "INV-1")
    do(engine, add_queue_members, "supervisors", [CAROL])
    first = open_task(engine, "INV-1", "k1")
    open_task(engine, "INV-1", "k2")
    assert do(engine, move_breached, first, "supervisors", NOW + timedelta(days=3)) is False
    assert stored(engine, first).assignee_id is None


# --- the import's owner column -------------------------------------------------------------

HEADER = (
    "invoice_number,customer_id,customer_name,email,timezone,currency,amount,issued_on,due_on,owner"
)


def write_csv(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def row(number: str, customer: str, owner: str = "") -> str:
    return f"{number},{customer},Name {customer},ap@{customer.lower()}.example,UTC,USD,10.00,2026-01-01,2026-01-31,{owner}"


def standard_policy(_row) -> tuple[str, int]:
    return ("standard", 1)


def test_the_import_sets_owners_and_an_empty_cell_keeps_one(
    engine: sa.Engine, people: dict[str, int], tmp_path: Path
) -> None:
    first = write_csv(tmp_path, "a.csv", row("INV-1", "C1", "Ann@Example.com"), row("INV-2", "C2"))
    with session_scope(engine) as session:
        assert import_file(session, first, standard_policy).imported == ["INV-1", "INV-2"]
    second = write_csv(
        tmp_path, "b.csv", row("INV-3", "C1"), row("INV-4", "C2", CAROL), row("INV-5", "C1")
    )
    with session_scope(engine) as session:
        assert import_file(session, second, standard_policy).ok
    with Session(engine) as session:
        owners = {c.id: c.owner_email for c in session.exec(select(Customer))}
    assert owners == {"C1": ANN, "C2": CAROL}
    changes = [d["changes"] for _, _, d in events(engine, "customer_updated")]
    assert changes == [{"owner_email": [None, CAROL]}]
    assert assignee(engine, open_task(engine, "INV-3", "k3")) == ANN


def test_the_import_refuses_owners_who_cannot_work_tasks(
    engine: sa.Engine, people: dict[str, int], tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path,
        "bad.csv",
        row("INV-1", "C1", "nobody@example.com"),
        row("INV-2", "C2", "vic@example.com"),
        row("INV-3", "C3", "dan@example.com"),
        row("INV-4", "C4", "not an email"),
        row("INV-5", "C5", ANN),
        row("INV-6", "C5", BOB),
    )
    with session_scope(engine) as session:
        report = import_file(session, path, standard_policy)
    assert [str(e) for e in report.refused if e.field == "owner"][:3] == [
        "row 2, owner: no user 'nobody@example.com' in the ledger",
        "row 3, owner: user vic@example.com is a viewer and cannot work tasks",
        "row 4, owner: user dan@example.com is disabled and cannot work tasks",
    ]
    assert {(e.row, e.field) for e in report.refused} == {
        (2, "owner"),
        (3, "owner"),
        (4, "owner"),
        (5, "owner"),
        (7, "owner"),  # rows of one customer must agree
    }
    with Session(engine) as session:
        assert session.exec(select(Invoice)).all() == []


# --- the commands --------------------------------------------------------------------------


@pytest.fixture
def cli(ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `dunwise ...` in this process on the ledger; (exit status, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)  # no .env file here
    for name in [n for n in os.environ if n.upper().startswith("DUNWISE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DUNWISE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUNWISE_DATABASE_URL", ledger_url)
    # The Temporal runtime's log level is set once per process; these commands never use it.
    monkeypatch.setattr(starter, "quiet_core_logs", lambda: None)

    def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
        get_settings.cache_clear()  # read this test's environment
        status = starter.run_command(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    engine = make_engine(ledger_url)
    add_user(engine, ANN)
    add_user(engine, "vic@example.com", Role.VIEWER)
    add_invoice(engine, "INV-1")
    yield run, engine
    engine.dispose()
    get_settings.cache_clear()


def test_queue_and_owner_commands(cli, capsys) -> None:
    run, engine = cli
    assert run(capsys, "queue", "list") == (
        0,
        "no queue has members: new tasks go to the customer's owner or no one\n",
        "",
    )
    assert run(capsys, "queue", "add", "collections", "ANN@example.com") == (
        0,
        f"queue collections: added {ANN}\n",
        "",
    )
    assert run(capsys, "queue", "add", "collections", ANN)[1] == (
        "queue collections: nothing changed, each user is a member already\n"
    )
    assert run(capsys, "queue", "list") == (0, f"collections\n  {ANN}  collector\n", "")
    status, out, _ = run(capsys, "queue", "list", "--json")
    assert (status, json.loads(out)) == (
        0,
        [
            {
                "queue": "collections",
                "members": [
                    {"email": ANN, "role": "collector", "disabled": False, "works_tasks": True}
                ],
            }
        ],
    )
    assert run(capsys, "customer", "owner", "C1") == (0, "customer C1: no owner\n", "")
    assert run(capsys, "customer", "owner", "C1", ANN) == (0, f"customer C1: owner {ANN}\n", "")
    assert run(capsys, "customer", "owner", "C1") == (0, f"customer C1: owner {ANN}\n", "")
    assert run(capsys, "customer", "owner", "C1", "--none") == (0, "customer C1: no owner\n", "")
    assert run(capsys, "queue", "remove", "collections", ANN) == (
        0,
        f"queue collections: removed {ANN}\n",
        "",
    )
    with Session(engine) as session:
        assert queues(session) == []
        actions = [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions == [
        "queue_member_added",
        "customer_owner_changed",
        "customer_owner_changed",
        "queue_member_removed",
    ]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["queue", "add", "collections", "nobody@example.com"],
            "dunwise queue: queue 'collections': no user 'nobody@example.com' in the ledger",
        ),
        (
            ["queue", "add", "collections", "vic@example.com"],
            "dunwise queue: queue 'collections': user vic@example.com is a viewer and cannot work tasks",
        ),
        (
            ["queue", "add", "q" * 65, ANN],
            "dunwise queue: queue name: 'qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq... is longer than 64 characters",
        ),
        (
            ["queue", "remove", "collections", ANN],
            f"dunwise queue: queue 'collections': {ANN} is not a member",
        ),
        (
            ["customer", "owner", "C1", "vic@example.com"],
            "dunwise customer: customer C1: user vic@example.com is a viewer and cannot work tasks",
        ),
        (
            ["customer", "owner", "C1", "nobody@example.com"],
            "dunwise customer: customer C1: no user 'nobody@example.com' in the ledger",
        ),
        (["customer", "owner", "C404", ANN], "dunwise customer: customer 'C404' does not exist"),
        (
            ["customer", "owner", "C1", ANN, "--none"],
            "dunwise customer: give the owner's email or --none, not both",
        ),
    ],
)
def test_commands_refuse_bad_input_in_one_line(cli, capsys, argv: list[str], line: str) -> None:
    run, engine = cli
    assert run(capsys, *argv) == (1, "", line + "\n")
    with Session(engine) as session:
        assert session.exec(select(QueueMember)).all() == []
        assert session.get(Customer, "C1").owner_email is None
        assert session.exec(select(AuditEvent)).all() == []


def test_the_installed_command_in_a_process_of_its_own(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DUNWISE_")}
    env["DUNWISE_DATA_DIR"] = str(tmp_path / "data")

    def dunwise(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DUNWISE, *argv],
            env=env,
            cwd=tmp_path,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert (
        dunwise("user", "add", ANN, "--role", "collector", stdin="a long password 1\n").returncode
        == 0
    )
    added = dunwise("queue", "add", "collections", ANN)
    assert (added.returncode, added.stdout, added.stderr) == (
        0,
        f"queue collections: added {ANN}\n",
        "",
    )
    listed = dunwise("queue", "list", "--json")
    assert json.loads(listed.stdout)[0]["members"][0]["email"] == ANN
    refused = dunwise("customer", "owner", "C1", ANN)
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1,
        "",
        "dunwise customer: customer 'C1' does not exist\n",
    )
    usage = dunwise("queue", "add", "collections")
    assert usage.returncode == 2 and "EMAIL" in usage.stderr


# --- migration 0010 ------------------------------------------------------------------------


def test_migration_0010_adds_routing_to_existing_customers_and_takes_it_away(
    empty_database_url: str,
) -> None:
    upgrade(empty_database_url, "0009")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO customer (id, name, timezone, locale, email_opt_out, sms_opt_out,"
                " created_at) VALUES ('C1', 'Acme', 'UTC', 'en', false, false, '2026-01-01 00:00:00')"
            )
            connection.exec_driver_sql(
                "INSERT INTO invoice (number, customer_id, currency, total_minor, balance_minor,"
                " issued_on, due_on, status, policy_name, policy_version, created_at, updated_at)"
                " VALUES ('INV-1', 'C1', 'USD', 100, 100, '2026-01-01', '2026-02-01', 'open',"
                " 'standard', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        upgrade(empty_database_url, "0010")
        inspector = sa.inspect(engine)
        assert "owner_email" in {c["name"] for c in inspector.get_columns("customer")}
        assert [fk["name"] for fk in inspector.get_foreign_keys("queue_member")] == [
            "fk_queue_member_user_id_app_user"
        ]
        assert [u["name"] for u in inspector.get_unique_constraints("queue_member")] == [
            "uq_queue_member_queue_user_id"
        ]
        with engine.connect() as connection:
            owner = connection.exec_driver_sql("SELECT owner_email FROM customer").all()
        assert owner == [(None,)]
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO queue_member (queue, user_id, created_at)"
                " VALUES ('collections', 77, '2026-01-01 00:00:00')"
            )

        command.downgrade(alembic_config(empty_database_url), "0009")
        inspector = sa.inspect(engine)
        assert "queue_member" not in inspector.get_table_names()
        assert "owner_email" not in {c["name"] for c in inspector.get_columns("customer")}
        with engine.connect() as connection:
            kept = connection.exec_driver_sql(
                "SELECT customer.id, invoice.number FROM customer JOIN invoice"
                " ON invoice.customer_id = customer.id"
            ).all()
        assert kept == [("C1", "INV-1")]
    finally:
        engine.dispose()
