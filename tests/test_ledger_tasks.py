"""Collector tasks at work: worklist, claim, release, reassign, round robin, SLA breach moves,
and migration 0007 that adds the assignment columns; both databases."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlmodel import Session, select

from ledger.books import LedgerError
from ledger.db import make_engine, session_scope
from ledger.lifecycle import close_collector_tasks, open_collector_task
from ledger.migrate import alembic_config, upgrade
from ledger.models import AppUser, AuditEvent, CollectorTask, Customer, Invoice, Role
from ledger.operations import apply_payment
from ledger.requests import CollectorOutcome, CollectorTaskRequest, PaymentApplication
from ledger.tasks import (
    TaskRefused,
    TaskStatus,
    UnknownTask,
    assign_round_robin,
    claim,
    get_task,
    move_breached,
    reassign,
    release,
    worklist,
)

TODAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# --- building a ledger ---------------------------------------------------------------------


def add_user(engine: sa.Engine, email: str, role: Role = Role.COLLECTOR, **fields) -> int:
    with session_scope(engine) as session:
        user = AppUser(email=email, password_hash="argon2-not-used-here", role=role, **fields)
        session.add(user)
        session.flush()
        return int(user.id)


def add_invoice(
    engine: sa.Engine,
    number: str,
    *,
    balance: int = 10_000,
    currency: str = "USD",
    due_on: date = date(2026, 2, 1),
    customer: str = "C1",
    segment: str | None = "smb",
) -> None:
    with session_scope(engine) as session:
        if session.get(Customer, customer) is None:
            session.add(Customer(id=customer, name=f"Customer {customer}", segment=segment))
            session.flush()
        session.add(
            Invoice(
                number=number,
                customer_id=customer,
                currency=currency,
                total_minor=balance,
                balance_minor=balance,
                issued_on=date(2026, 1, 1),
                due_on=due_on,
                policy_name="standard",
                policy_version=1,
            )
        )


def add_task(
    engine: sa.Engine,
    number: str,
    *,
    queue: str = "collections",
    priority: str = "normal",
    due_at: datetime = NOW + timedelta(days=2),
) -> int:
    with session_scope(engine) as session:
        return open_collector_task(
            session,
            CollectorTaskRequest(
                invoice_number=number,
                queue=queue,
                priority=priority,
                due_at=due_at,
                idempotency_key=f"{number}:escalation:{queue}:{due_at.isoformat()}",
            ),
        )


def stored(engine: sa.Engine, task_id: int) -> CollectorTask:
    with Session(engine) as session:
        task = session.get(CollectorTask, task_id)
        assert task is not None
        session.expunge(task)
        return task


def task_events(engine: sa.Engine) -> list[tuple[str, str, dict]]:
    """(action, actor, detail) of every audit event about assignment or queues, in order."""
    with Session(engine) as session:
        events = session.exec(
            select(AuditEvent)
            .where(AuditEvent.action.like("collector_task_%"))
            .where(AuditEvent.action != "collector_task_opened")
            .order_by(AuditEvent.id)
        ).all()
        return [(e.action, e.actor, json.loads(e.detail)) for e in events]


def do(engine: sa.Engine, change, *args, **kwargs):
    with session_scope(engine) as session:
        return change(session, *args, **kwargs)


@pytest.fixture
def people(engine: sa.Engine) -> dict[str, int]:
    return {
        "ann": add_user(engine, "ann@example.com"),
        "bob": add_user(engine, "bob@example.com"),
        "carol": add_user(engine, "carol@example.com", Role.ADMIN),
    }


@pytest.fixture
def task(engine: sa.Engine) -> int:
    add_invoice(engine, "INV-1")
    return add_task(engine, "INV-1")


# --- worklist ------------------------------------------------------------------------------


def test_worklist_sorts_by_priority_then_sla_then_balance(engine: sa.Engine) -> None:
    specs = {  # invoice: (priority, SLA from NOW, balance)
        "INV-LOW": ("low", timedelta(hours=1), 99_000),
        "INV-HIGH-SMALL": ("high", timedelta(days=1), 100),
        "INV-NORMAL": ("normal", timedelta(days=1), 500),
        "INV-URGENT": ("urgent", timedelta(days=5), 100),
        "INV-HIGH-BIG": ("high", timedelta(days=1), 900),
        "INV-HIGH-SOON": ("high", timedelta(hours=12), 1),
    }
    for number, (priority, sla, balance) in specs.items():
        add_invoice(engine, number, balance=balance)
        add_task(engine, number, priority=priority, due_at=NOW + sla)
    with Session(engine) as session:
        listed = [view.invoice for view in worklist(session, today=TODAY)]
    assert listed == [
        "INV-URGENT",
        "INV-HIGH-SOON",
        "INV-HIGH-BIG",
        "INV-HIGH-SMALL",
        "INV-NORMAL",
        "INV-LOW",
    ]


def test_worklist_ties_go_to_the_oldest_task(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    add_invoice(engine, "INV-2")
    first = add_task(engine, "INV-2", queue="a")
    second = add_task(engine, "INV-1", queue="b")
    with Session(engine) as session:
        assert [view.id for view in worklist(session, today=TODAY)] == [first, second]


@pytest.fixture
def spread(engine: sa.Engine, people: dict[str, int]) -> dict[str, int]:
    """Four invoices of two customers, in two currencies and queues; one task closed."""
    add_invoice(engine, "INV-A", due_on=date(2026, 2, 20), balance=1_000)  # 10 days past due
    add_invoice(
        engine,
        "INV-B",
        currency="EUR",
        due_on=date(2026, 1, 31),  # 30 days past due
        customer="C2",
        segment="enterprise",
    )
    add_invoice(engine, "INV-C", currency="EUR", due_on=date(2026, 3, 5))  # due in 3 days
    add_invoice(engine, "INV-D", due_on=date(2025, 12, 2), customer="C2")  # 90 days
    tasks = {
        "A": add_task(engine, "INV-A"),
        "B": add_task(engine, "INV-B", queue="key-accounts"),
        "C": add_task(engine, "INV-C"),
        "D": add_task(engine, "INV-D"),
    }
    do(engine, claim, tasks["A"], people["ann"], "ann@example.com")
    do(
        engine,
        close_collector_tasks,
        CollectorOutcome(invoice_number="INV-D", outcome="stopped", actor="ann@example.com"),
    )
    return tasks


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["A", "B", "C"]),
        ({"include_closed": True}, ["A", "B", "C", "D"]),
        ({"queue": "collections"}, ["A", "C"]),
        ({"queue": "key-accounts"}, ["B"]),
        ({"queue": "nowhere"}, []),
        ({"segment": "enterprise"}, ["B"]),
        ({"segment": "smb"}, ["A", "C"]),
        ({"currency": "EUR"}, ["B", "C"]),
        ({"min_days_past_due": 10}, ["A", "B"]),
        ({"max_days_past_due": 10}, ["A", "C"]),
        ({"min_days_past_due": 10, "max_days_past_due": 10}, ["A"]),
        ({"min_days_past_due": 11, "max_days_past_due": 30}, ["B"]),
        ({"min_days_past_due": -3, "max_days_past_due": 0}, ["C"]),
        ({"min_days_past_due": 31, "include_closed": True}, ["D"]),
        ({"queue": "collections", "currency": "USD"}, ["A"]),
        ({"assignee": "ann"}, ["A"]),
        ({"assignee": "bob"}, []),
    ],
)
def test_worklist_filters(
    engine: sa.Engine,
    people: dict[str, int],
    spread: dict[str, int],
    filters: dict,
    expected: list[str],
) -> None:
    if "assignee" in filters:
        filters = {"assignee_id": people[filters["assignee"]]}
    with Session(engine) as session:
        listed = worklist(session, today=TODAY, **filters)
    assert sorted(view.invoice.removeprefix("INV-") for view in listed) == expected


def test_worklist_limit_keeps_the_most_pressing(engine: sa.Engine, spread: dict[str, int]) -> None:
    with Session(engine) as session:
        everything = worklist(session, today=TODAY)
        assert worklist(session, today=TODAY, limit=2) == everything[:2]
        assert len(everything) == 3


def test_worklist_views_carry_the_invoice_customer_and_assignee(
    engine: sa.Engine, spread: dict[str, int]
) -> None:
    with Session(engine) as session:
        views = {v.invoice: v for v in worklist(session, today=TODAY, include_closed=True)}
    a, c, d = views["INV-A"], views["INV-C"], views["INV-D"]
    assert (a.id, a.customer_id, a.customer_name, a.segment) == (
        spread["A"],
        "C1",
        "Customer C1",
        "smb",
    )
    assert (a.currency, a.balance_minor, a.days_past_due) == ("USD", 1_000, 10)
    assert (a.queue, a.priority, a.status, a.assignee, a.breached) == (
        "collections",
        "normal",
        TaskStatus.CLAIMED,
        "ann@example.com",
        False,
    )
    assert a.due_at == NOW + timedelta(days=2) and a.created_at.tzinfo is not None
    assert (c.status, c.assignee, c.days_past_due) == (TaskStatus.OPEN, None, -3)
    assert (d.status, d.days_past_due, d.segment) == (TaskStatus.CLOSED, 90, "enterprise")


def test_worklist_is_one_query_however_many_tasks(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    for n in range(25):
        add_invoice(engine, f"INV-{n}", customer=f"C{n % 4}")
        task_id = add_task(engine, f"INV-{n}")
        if n % 2:
            do(engine, claim, task_id, people["ann" if n % 3 else "bob"], "x")
    selects: list[str] = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        with Session(engine) as session:
            views = worklist(session, today=TODAY)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(views) == 25
    assert {v.assignee for v in views} == {None, "ann@example.com", "bob@example.com"}
    assert len(selects) == 1, selects


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"limit": 0}, "limit must be at least 1, got 0"),
        ({"min_days_past_due": 30, "max_days_past_due": 10}, "min_days_past_due 30 is more"),
        ({"min_days_past_due": 10**9}, "min_days_past_due 1000000000 is beyond"),
        ({"max_days_past_due": -(10**6)}, "max_days_past_due -1000000 is beyond"),
    ],
)
def test_worklist_refuses_bad_filters(engine: sa.Engine, filters: dict, message: str) -> None:
    with Session(engine) as session, pytest.raises(LedgerError, match=message):
        worklist(session, today=TODAY, **filters)


def test_a_task_with_an_unknown_priority_is_named(engine: sa.Engine) -> None:
    add_invoice(engine, "INV-1")
    task_id = add_task(engine, "INV-1", priority="critical")
    with Session(engine) as session, pytest.raises(LedgerError) as refused:
        worklist(session, today=TODAY)
    assert str(refused.value) == (
        f"collector task {task_id} on invoice INV-1 has priority 'critical', "
        "not one of low, normal, high, urgent"
    )


# --- claim, release, reassign --------------------------------------------------------------


def test_claim_takes_an_open_task_and_audits_it(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    view = do(engine, claim, task, people["ann"], "ann@example.com", request_id="req-1")
    assert (view.status, view.assignee) == (TaskStatus.CLAIMED, "ann@example.com")
    row = stored(engine, task)
    assert (row.assignee_id, row.status, row.request_id) == (people["ann"], "open", "req-1")
    assert row.claimed_at is not None and row.claimed_at.tzinfo is not None
    assert task_events(engine) == [
        (
            "collector_task_claimed",
            "ann@example.com",
            {
                "task_id": task,
                "queue": "collections",
                "before": None,
                "after": "ann@example.com",
                "request_id": "req-1",
            },
        )
    ]


def test_claiming_ones_own_task_again_changes_nothing(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    do(engine, claim, task, people["ann"], "ann@example.com")
    first = stored(engine, task)
    view = do(engine, claim, task, people["ann"], "ann@example.com", request_id="again")
    assert view.assignee == "ann@example.com"
    again = stored(engine, task)
    assert (again.claimed_at, again.request_id) == (first.claimed_at, None)
    assert [action for action, _, _ in task_events(engine)] == ["collector_task_claimed"]
    assert "request_id" not in task_events(engine)[0][2]


def test_a_task_claimed_by_someone_else_is_refused_naming_who(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    do(engine, claim, task, people["ann"], "ann@example.com")
    with pytest.raises(TaskRefused) as refused:
        do(engine, claim, task, people["bob"], "bob@example.com")
    assert str(refused.value) == (
        f"collector task {task} on invoice INV-1 is already claimed by ann@example.com: "
        "they or an admin must release it first, or an admin reassign it"
    )
    assert stored(engine, task).assignee_id == people["ann"]
    assert len(task_events(engine)) == 1


def test_two_claims_at_once_one_wins(engine: sa.Engine, people: dict[str, int], task: int) -> None:
    outcome: list[object] = []

    def bob_claims() -> None:
        try:
            outcome.append(do(engine, claim, task, people["bob"], "bob@example.com"))
        except TaskRefused as refused:
            outcome.append(refused)

    with session_scope(engine) as session:
        claim(session, task, people["ann"], "ann@example.com")
        bob = threading.Thread(target=bob_claims)
        bob.start()
        bob.join(1.0)
        assert bob.is_alive(), "the second claim must wait for the first to commit"
    bob.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], TaskRefused)
    assert "already claimed by ann@example.com" in str(outcome[0])
    assert stored(engine, task).assignee_id == people["ann"]


def test_only_the_assignee_or_an_admin_may_release(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    do(engine, claim, task, people["ann"], "ann@example.com")
    with pytest.raises(TaskRefused, match="is claimed by ann@example.com: only they or an admin"):
        do(engine, release, task, people["bob"], "bob@example.com")
    assert stored(engine, task).assignee_id == people["ann"]

    view = do(engine, release, task, people["ann"], "ann@example.com", request_id="rel-1")
    assert (view.status, view.assignee) == (TaskStatus.OPEN, None)
    row = stored(engine, task)
    assert (row.assignee_id, row.claimed_at, row.request_id) == (None, None, "rel-1")

    do(engine, claim, task, people["bob"], "bob@example.com")
    do(engine, release, task, people["carol"], "carol@example.com", admin=True)
    assert stored(engine, task).assignee_id is None
    assert [(a, actor, d["before"], d["after"]) for a, actor, d in task_events(engine)] == [
        ("collector_task_claimed", "ann@example.com", None, "ann@example.com"),
        ("collector_task_released", "ann@example.com", "ann@example.com", None),
        ("collector_task_claimed", "bob@example.com", None, "bob@example.com"),
        ("collector_task_released", "carol@example.com", "bob@example.com", None),
    ]
    assert task_events(engine)[1][2]["request_id"] == "rel-1"


def test_releasing_an_unclaimed_task_changes_nothing(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    view = do(engine, release, task, people["bob"], "bob@example.com")
    assert view.status == TaskStatus.OPEN
    assert task_events(engine) == []


def test_reassign_moves_the_task_and_audits_before_and_after(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    view = do(engine, reassign, task, people["bob"], "carol@example.com", request_id="ra-1")
    assert (view.status, view.assignee) == (TaskStatus.CLAIMED, "bob@example.com")
    do(engine, reassign, task, people["ann"], "carol@example.com", request_id="ra-2")
    do(engine, reassign, task, people["ann"], "carol@example.com", request_id="ra-3")  # no-op
    assert stored(engine, task).assignee_id == people["ann"]
    assert stored(engine, task).request_id == "ra-2"
    assert task_events(engine) == [
        (
            "collector_task_reassigned",
            "carol@example.com",
            {
                "task_id": task,
                "queue": "collections",
                "before": None,
                "after": "bob@example.com",
                "request_id": "ra-1",
            },
        ),
        (
            "collector_task_reassigned",
            "carol@example.com",
            {
                "task_id": task,
                "queue": "collections",
                "before": "bob@example.com",
                "after": "ann@example.com",
                "request_id": "ra-2",
            },
        ),
    ]


def test_a_closed_task_cannot_be_claimed_released_reassigned_or_assigned(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    do(engine, claim, task, people["ann"], "ann@example.com")
    do(engine, close_collector_tasks, CollectorOutcome(invoice_number="INV-1", outcome="paid"))
    attempts = {
        "claimed": lambda s: claim(s, task, people["bob"], "bob@example.com"),
        "released": lambda s: release(s, task, people["ann"], "ann@example.com"),
        "reassigned": lambda s: reassign(s, task, people["bob"], "carol@example.com"),
        "assigned": lambda s: assign_round_robin(s, task, [people["bob"]]),
    }
    for doing, attempt in attempts.items():
        with pytest.raises(TaskRefused) as refused, session_scope(engine) as session:
            attempt(session)
        assert str(refused.value) == (
            f"collector task {task} on invoice INV-1 is closed: it cannot be {doing}"
        )
    assert stored(engine, task).assignee_id == people["ann"]  # who worked it stays on record


def test_paying_the_invoice_closes_a_claimed_task(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    do(engine, claim, task, people["ann"], "ann@example.com")
    do(
        engine,
        apply_payment,
        PaymentApplication(
            invoice_number="INV-1",
            amount_minor=10_000,
            currency="USD",
            received_at=NOW,
            idempotency_key="INV-1:payment:p1",
        ),
    )
    with Session(engine) as session:
        assert worklist(session, today=TODAY) == []
        view = get_task(session, task, today=TODAY)
    assert (view.status, view.assignee) == (TaskStatus.CLOSED, "ann@example.com")


@pytest.mark.parametrize(
    ("who", "message"),
    [
        ("nobody", "collector task {task}: user 9999 does not exist"),
        ("viewer", "collector task {task}: user vic@example.com is a viewer and cannot work tasks"),
        ("disabled", "collector task {task}: user dan@example.com is disabled"),
    ],
)
def test_only_active_collectors_and_admins_take_tasks(
    engine: sa.Engine, task: int, who: str, message: str
) -> None:
    users = {
        "nobody": 9999,
        "viewer": add_user(engine, "vic@example.com", Role.VIEWER),
        "disabled": add_user(engine, "dan@example.com", disabled=True),
    }
    for change in (claim, reassign):
        with pytest.raises(TaskRefused) as refused:
            do(engine, change, task, users[who], "someone@example.com")
        assert str(refused.value) == message.format(task=task)
    assert stored(engine, task).assignee_id is None
    assert task_events(engine) == []


def test_unknown_tasks_and_bad_request_ids_are_refused(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    for change in (claim, release, reassign):
        with pytest.raises(UnknownTask, match="collector task 424242 does not exist"):
            do(engine, change, 424242, people["ann"], "ann@example.com")
    with pytest.raises(UnknownTask, match="collector task 424242 does not exist"):
        do(engine, move_breached, 424242, "supervisors", NOW)
    with Session(engine) as session, pytest.raises(UnknownTask):
        get_task(session, 424242)
    for bad in ("", "r" * 101):
        with pytest.raises(TaskRefused, match="request id must be 1 to 100 characters"):
            do(engine, claim, task, people["ann"], "ann@example.com", request_id=bad)
    assert task_events(engine) == []


# --- assignment by rule --------------------------------------------------------------------


def test_round_robin_gives_each_task_to_the_least_loaded_member(engine: sa.Engine) -> None:
    members = [add_user(engine, f"m{n}@example.com") for n in range(3)]
    tasks = []
    for n in range(7):  # one invoice each: an invoice has one open task
        add_invoice(engine, f"INV-{n}")
        tasks.append(add_task(engine, f"INV-{n}", due_at=NOW + timedelta(hours=n)))
    chosen = [do(engine, assign_round_robin, t, list(reversed(members))) for t in tasks]
    first, second, third = members
    assert chosen == [first, second, third, first, second, third, first]
    assert [stored(engine, t).assignee_id for t in tasks] == chosen
    assert [action for action, _, _ in task_events(engine)] == ["collector_task_assigned"] * 7


def test_round_robin_counts_open_claims_in_the_task_queue_only(engine: sa.Engine) -> None:
    first, second, third = (add_user(engine, f"m{n}@example.com") for n in range(3))
    numbers = ["INV-S1", "INV-S2", "INV-F", "INV-T", *(f"INV-N{n}" for n in range(4))]
    for number in numbers:  # one invoice per task: an invoice has one open task
        add_invoice(engine, number)
    # second holds two open tasks in the queue; first's task is in another queue; third's is
    # in the queue but closed: neither of the last two counts.
    for number in ("INV-S1", "INV-S2"):
        do(engine, claim, add_task(engine, number), second, "x")
    do(engine, claim, add_task(engine, "INV-F", queue="other"), first, "x")
    do(engine, claim, add_task(engine, "INV-T"), third, "x")
    do(engine, close_collector_tasks, CollectorOutcome(invoice_number="INV-T", outcome="paid"))
    new = [add_task(engine, f"INV-N{n}") for n in range(4)]
    chosen = [do(engine, assign_round_robin, t, [first, second, third]) for t in new]
    # loads (first, second, third): 0,2,0 -> first; 1,2,0 -> third; 1,2,1 -> first; 2,2,1 -> third
    assert chosen == [first, third, first, third]


def test_round_robin_keeps_an_assigned_task_with_its_assignee(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    do(engine, claim, task, people["bob"], "bob@example.com")
    assert do(engine, assign_round_robin, task, [people["ann"]]) == people["bob"]
    assert [action for action, _, _ in task_events(engine)] == ["collector_task_claimed"]


def test_round_robin_refuses_a_queue_without_workers(
    engine: sa.Engine, people: dict[str, int], task: int
) -> None:
    viewer = add_user(engine, "vic@example.com", Role.VIEWER)
    cases = [
        ([], f"collector task {task} on invoice INV-1: queue 'collections' has no members"),
        ([people["ann"], 9999], "queue 'collections': user 9999 does not exist"),
        ([people["ann"], viewer], "queue 'collections': user vic@example.com is a viewer"),
    ]
    for members, message in cases:
        with pytest.raises(TaskRefused, match=message):
            do(engine, assign_round_robin, task, members)
    assert stored(engine, task).assignee_id is None


# --- SLA breach ----------------------------------------------------------------------------


def test_a_breached_task_moves_to_the_supervisor_queue_once(
    engine: sa.Engine, people: dict[str, int]
) -> None:
    add_invoice(engine, "INV-1")
    task = add_task(engine, "INV-1", due_at=NOW)
    do(engine, claim, task, people["ann"], "ann@example.com")
    later = NOW + timedelta(minutes=5)
    assert do(engine, move_breached, task, "collections-supervisor", later) is True
    row = stored(engine, task)
    assert (row.queue, row.escalated_from_queue, row.breached_at) == (
        "collections-supervisor",
        "collections",
        later,
    )
    assert (row.assignee_id, row.claimed_at, row.status) == (None, None, "open")
    with Session(engine) as session:
        view = get_task(session, task, today=TODAY)
    assert (view.breached, view.status, view.queue) == (True, "open", "collections-supervisor")

    assert do(engine, move_breached, task, "elsewhere", later + timedelta(days=1)) is False
    assert stored(engine, task).model_dump() == row.model_dump()
    breaches = [e for e in task_events(engine) if e[0] == "collector_task_breached"]
    assert breaches == [
        (
            "collector_task_breached",
            "system",
            {
                "task_id": task,
                "before": "collections",
                "after": "collections-supervisor",
                "assignee_before": "ann@example.com",
                "due_at": NOW.isoformat(),
                "breached_at": later.isoformat(),
            },
        )
    ]


def test_breach_moves_refuse_a_task_within_its_sla_and_bad_input(
    engine: sa.Engine, task: int
) -> None:
    due = stored(engine, task).due_at
    with pytest.raises(TaskRefused, match="is due by .*: at .* it has not passed its SLA"):
        do(engine, move_breached, task, "supervisors", due - timedelta(seconds=1))
    with pytest.raises(LedgerError, match="must be timezone-aware"):
        do(engine, move_breached, task, "supervisors", datetime(2026, 3, 9))
    for queue in ("", "   ", "q" * 65):
        with pytest.raises(TaskRefused, match="supervisor queue must be 1 to 64 characters"):
            do(engine, move_breached, task, queue, due)
    assert stored(engine, task).breached_at is None
    assert task_events(engine) == []


def test_a_closed_task_is_not_moved(engine: sa.Engine, task: int) -> None:
    do(engine, close_collector_tasks, CollectorOutcome(invoice_number="INV-1", outcome="paid"))
    due = stored(engine, task).due_at
    assert do(engine, move_breached, task, "supervisors", due + timedelta(days=1)) is False
    assert (stored(engine, task).queue, stored(engine, task).breached_at) == ("collections", None)


# --- migration 0007 ------------------------------------------------------------------------

NEW_COLUMNS = {"assignee_id", "claimed_at", "breached_at", "escalated_from_queue", "request_id"}


def test_migration_0007_keeps_existing_tasks_open_and_unassigned(
    empty_database_url: str,
) -> None:
    upgrade(empty_database_url, "0006")
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
            connection.exec_driver_sql(
                "INSERT INTO collectortask (invoice_id, queue, priority, status, due_at,"
                " idempotency_key, created_at) SELECT id, 'collections', 'high', 'open',"
                " '2026-03-01 00:00:00', 'k1', '2026-02-01 00:00:00' FROM invoice"
            )
        upgrade(empty_database_url, "0007")
        inspector = sa.inspect(engine)
        columns = {c["name"] for c in inspector.get_columns("collectortask")}
        assert columns >= NEW_COLUMNS
        assert {
            (fk["name"], fk["referred_table"]) for fk in inspector.get_foreign_keys("collectortask")
        } == {
            ("fk_collectortask_invoice_id_invoice", "invoice"),
            ("fk_collectortask_assignee_id_app_user", "app_user"),
        }
        with Session(engine) as session:
            (task,) = session.exec(select(CollectorTask)).all()
            assert (task.queue, task.status, task.idempotency_key) == ("collections", "open", "k1")
            assert (task.assignee_id, task.breached_at, task.request_id) == (None, None, None)
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.exec_driver_sql("UPDATE collectortask SET assignee_id = 77")

        command.downgrade(alembic_config(empty_database_url), "0006")
        inspector = sa.inspect(engine)
        assert not NEW_COLUMNS & {c["name"] for c in inspector.get_columns("collectortask")}
        with engine.connect() as connection:
            kept = connection.exec_driver_sql("SELECT idempotency_key FROM collectortask").all()
        assert kept == [("k1",)]
    finally:
        engine.dispose()
