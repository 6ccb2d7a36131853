"""Who may be given collector tasks: the members of each queue, and the owner of each customer.

`ledger.assignment` reads these when a task opens and `ledger.tasks.move_breached` when a
task moves to its supervisor queue; admins change them here (`dunwise queue`, `dunwise
customer owner`). Callers pass a session whose transaction they commit.

Invariants:

- A queue name is a slug of at most 64 characters, as the policy language names queues. A
  queue exists while it has members; a user is a member of a queue at most once.
- Only a user who can work tasks (a collector or an admin, not disabled) is added to a queue
  or made an owner; a member or owner who later cannot is kept on record, and skipped when
  tasks are given out.
- An owner is kept as the user's lower-cased email; a customer has at most one.
- Every change writes an audit event in the same transaction; asking for what already is
  (adding a member twice, setting the current owner) changes and writes nothing. A request
  naming several users is checked whole before anything changes.
"""

from __future__ import annotations

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.books import LedgerError, first_row, record_audit
from ledger.models import AppUser, Customer, QueueMember, Role
from ledger.users import UserError, find_user, normalize_email
from policies.schema import Slug

# Collectors and admins work tasks; viewers only look.
WORKING_ROLES = frozenset(role for role in Role if role.includes(Role.COLLECTOR))
_QUEUE_NAME = TypeAdapter(Slug)


class RoutingError(LedgerError):
    """A queue or owner change the ledger refuses; the message names the place and problem."""


class Member(BaseModel):
    email: str
    role: str
    disabled: bool
    works_tasks: bool  # False: kept on record, skipped when tasks are given out


class QueueView(BaseModel):
    queue: str
    members: list[Member]  # by email


# --- reading -------------------------------------------------------------------------------


def can_work_tasks(user: AppUser | None) -> bool:
    return user is not None and not user.disabled and user.role in WORKING_ROLES


def working_members(session: Session, queue: str) -> list[int]:
    """The ids of the queue's members who can work tasks now, lowest first."""
    statement = (
        select(AppUser.id)
        .join(QueueMember, QueueMember.user_id == AppUser.id)
        .where(
            QueueMember.queue == queue,
            AppUser.disabled == False,  # noqa: E712  (SQL, not Python)
            AppUser.role.in_(sorted(WORKING_ROLES)),
        )
        .order_by(AppUser.id)
    )
    return list(session.exec(statement))


def task_workers(session: Session) -> list[str]:
    """The emails of every user who can work tasks now, for a reassign form."""
    statement = (
        select(AppUser.email)
        .where(
            AppUser.disabled == False,  # noqa: E712  (SQL, not Python)
            AppUser.role.in_(sorted(WORKING_ROLES)),
        )
        .order_by(AppUser.email)
    )
    return list(session.exec(statement))


def working_owner(session: Session, customer_id: str) -> AppUser | None:
    """The customer's owner when that email is a user who can work tasks now, else None."""
    customer = session.get(Customer, customer_id)
    if customer is None or customer.owner_email is None:
        return None
    user = session.exec(select(AppUser).where(AppUser.email == customer.owner_email)).first()
    return user if can_work_tasks(user) else None


def queues(session: Session) -> list[QueueView]:
    """Every queue that has members, by name, each with its members by email."""
    rows = session.exec(
        select(QueueMember.queue, AppUser)
        .join(AppUser, AppUser.id == QueueMember.user_id)
        .order_by(QueueMember.queue, AppUser.email)
    ).all()
    views: dict[str, QueueView] = {}
    for queue, user in rows:
        view = views.setdefault(queue, QueueView(queue=queue, members=[]))
        view.members.append(
            Member(
                email=user.email,
                role=str(user.role),
                disabled=user.disabled,
                works_tasks=can_work_tasks(user),
            )
        )
    return list(views.values())


def owner_of(session: Session, customer_id: str) -> str | None:
    """The email of the customer's owner, whether or not they can work tasks now."""
    return _customer(session, customer_id).owner_email


# --- changing ------------------------------------------------------------------------------


def add_queue_members(
    session: Session, queue: str, emails: list[str], *, actor: str = "operator"
) -> list[str]:
    """Make each user a member of the queue; the emails newly added (members already are
    left as they are). Refused whole if any user is unknown or cannot work tasks."""
    name = check_queue_name(queue)
    users = _users(session, emails, f"queue {name!r}", working=True)
    current = _member_ids(session, name)
    added = []
    for user in users:
        if user.id in current:
            continue
        current.add(user.id)
        try:
            # A concurrent add of the same member loses here, on the unique pair.
            with session.begin_nested():
                session.add(QueueMember(queue=name, user_id=user.id))
        except IntegrityError:
            continue
        record_audit(
            session,
            actor,
            "queue_member_added",
            None,
            {"queue": name, "user_id": user.id, "email": user.email},
        )
        added.append(user.email)
    session.flush()
    return added


def remove_queue_members(
    session: Session, queue: str, emails: list[str], *, actor: str = "operator"
) -> list[str]:
    """Take each user out of the queue; the emails removed. Refused whole if any user is
    unknown or not a member. Their open tasks in the queue stay theirs."""
    name = check_queue_name(queue)
    users = _users(session, emails, f"queue {name!r}", working=False)
    rows = {
        row.user_id: row
        for row in session.exec(select(QueueMember).where(QueueMember.queue == name))
    }
    for user in users:
        if user.id not in rows:
            raise RoutingError(f"queue {name!r}: {user.email} is not a member")
    for user in users:
        session.delete(rows[user.id])
        record_audit(
            session,
            actor,
            "queue_member_removed",
            None,
            {"queue": name, "user_id": user.id, "email": user.email},
        )
    session.flush()
    return [user.email for user in users]


def set_customer_owner(
    session: Session, customer_id: str, email: str | None, *, actor: str = "operator"
) -> str | None:
    """Make the user the customer's owner, or with None leave the customer without one; the
    owner's email. Refused for an unknown customer or a user who cannot work tasks."""
    customer = _customer(session, customer_id, for_update=True)
    after = None
    if email is not None:
        (user,) = _users(session, [email], f"customer {customer.id}", working=True)
        after = user.email
    before = customer.owner_email
    if after != before:
        customer.owner_email = after
        session.add(customer)
        record_audit(
            session,
            actor,
            "customer_owner_changed",
            None,
            {"customer_id": customer.id, "before": before, "after": after},
        )
        session.flush()
    return after


def check_queue_name(queue: str) -> str:
    try:
        return _QUEUE_NAME.validate_python(queue)
    except ValidationError as invalid:
        reason = invalid.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise RoutingError(f"queue name: {reason}") from None


# --- helpers -------------------------------------------------------------------------------


def _users(session: Session, emails: list[str], place: str, *, working: bool) -> list[AppUser]:
    """The users named, each once, in the order given; RoutingError for the first problem."""
    if not emails:
        raise RoutingError(f"{place}: name at least one user by email")
    users: dict[int, AppUser] = {}
    for email in emails:
        try:
            address = normalize_email(email)
        except UserError as err:
            raise RoutingError(f"{place}: {err}") from None
        user = find_user(session, address)
        if user is None:
            raise RoutingError(f"{place}: no user {address!r} in the ledger")
        if working and user.disabled:
            raise RoutingError(f"{place}: user {user.email} is disabled and cannot work tasks")
        if working and user.role not in WORKING_ROLES:
            raise RoutingError(f"{place}: user {user.email} is a {user.role} and cannot work tasks")
        users.setdefault(user.id, user)
    return list(users.values())


def _member_ids(session: Session, queue: str) -> set[int]:
    return set(session.exec(select(QueueMember.user_id).where(QueueMember.queue == queue)))


def _customer(session: Session, customer_id: str, *, for_update: bool = False) -> Customer:
    customer = first_row(
        session, select(Customer).where(Customer.id == customer_id), for_update=for_update
    )
    if customer is None:
        raise RoutingError(f"customer {customer_id!r} does not exist")
    return customer
