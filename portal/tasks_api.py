"""Collector tasks and the audit trail as JSON: the worklist with its filters, claim, release
and reassign, and the audit export (CSV or JSON). Bearer API keys decide who may do what."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ledger import audit_export, tasks
from ledger.books import LedgerError
from ledger.db import session_scope
from ledger.models import Role
from ledger.users import find_user
from portal.auth import Actor, api_actor
from portal.links import now

router = APIRouter(prefix="/api", tags=["collectors"])
Viewer = Annotated[Actor, Depends(api_actor(Role.VIEWER))]
Collector = Annotated[Actor, Depends(api_actor(Role.COLLECTOR))]


class TaskOut(BaseModel):
    id: int
    invoice: str
    customer_id: str
    customer_name: str
    segment: str | None
    currency: str
    balance: int = Field(description="minor units of the currency")
    days_past_due: int
    queue: str
    priority: str
    due_at: datetime
    status: str
    assignee: str | None
    breached: bool


class ReassignIn(BaseModel):
    to: str = Field(description="the email of the user who takes the task")
    request_id: str | None = Field(None, min_length=1, max_length=100)


class TaskChangeIn(BaseModel):
    request_id: str | None = Field(None, min_length=1, max_length=100)


def _out(view: tasks.TaskView) -> TaskOut:
    return TaskOut(
        id=view.id,
        invoice=view.invoice,
        customer_id=view.customer_id,
        customer_name=view.customer_name,
        segment=view.segment,
        currency=view.currency,
        balance=view.balance_minor,
        days_past_due=view.days_past_due,
        queue=view.queue,
        priority=view.priority,
        due_at=view.due_at,
        status=view.status,
        assignee=view.assignee,
        breached=view.breached,
    )


@router.get("/tasks", response_model=list[TaskOut])
async def task_list(
    request: Request,
    actor: Viewer,
    queue: str | None = None,
    segment: str | None = None,
    currency: str | None = Query(None, min_length=3, max_length=3),
    min_days_past_due: int | None = Query(None, ge=0),
    max_days_past_due: int | None = Query(None, ge=0),
    mine: bool = Query(False, description="only the tasks assigned to the caller"),
    include_closed: bool = False,
) -> list[TaskOut]:
    """The worklist: urgent first, then the SLA soonest, then the largest balance."""
    with session_scope(request.app.state.services.engine) as session, _refusals():
        views = tasks.worklist(
            session,
            today=now().date(),
            queue=queue,
            segment=segment,
            currency=currency.upper() if currency else None,
            min_days_past_due=min_days_past_due,
            max_days_past_due=max_days_past_due,
            assignee_id=actor.user_id if mine else None,
            include_closed=include_closed,
        )
    return [_out(view) for view in views]


@router.post("/tasks/{task_id}/claim", response_model=TaskOut)
async def claim(
    request: Request, task_id: int, actor: Collector, body: TaskChangeIn | None = None
) -> TaskOut:
    with session_scope(request.app.state.services.engine) as session, _refusals():
        view = tasks.claim(session, task_id, actor.user_id, actor.audit_name, request_id=_id(body))
    return _out(view)


@router.post("/tasks/{task_id}/release", response_model=TaskOut)
async def release(
    request: Request, task_id: int, actor: Collector, body: TaskChangeIn | None = None
) -> TaskOut:
    with session_scope(request.app.state.services.engine) as session, _refusals():
        view = tasks.release(
            session,
            task_id,
            actor.user_id,
            actor.audit_name,
            admin=actor.can(Role.ADMIN),
            request_id=_id(body),
        )
    return _out(view)


@router.post("/tasks/{task_id}/reassign", response_model=TaskOut)
async def reassign(request: Request, task_id: int, actor: Collector, body: ReassignIn) -> TaskOut:
    with session_scope(request.app.state.services.engine) as session, _refusals():
        user = find_user(session, body.to)
        if user is None or user.disabled:
            raise HTTPException(422, f"to: no active user {body.to}")
        view = tasks.reassign(
            session, task_id, user.id, actor.audit_name, request_id=body.request_id
        )
    return _out(view)


@router.get("/audit")
async def audit(
    request: Request,
    actor: Viewer,
    format: Literal["csv", "json"] = "json",
    invoice: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Response:
    """Who changed what and when: time, actor, action, invoice, before, after, request id."""
    with session_scope(request.app.state.services.engine) as session, _refusals():
        rows = audit_export.audit_rows(session, invoice_number=invoice, since=since, until=until)
    if format == "csv":
        return Response(
            audit_export.audit_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="dunwise-audit.csv"'},
        )
    return Response(
        "[" + ",".join(row.model_dump_json() for row in rows) + "]",
        media_type="application/json",
    )


def _id(body: TaskChangeIn | None) -> str | None:
    return body.request_id if body else None


@contextmanager
def _refusals() -> Iterator[None]:
    """A task the ledger cannot change the way asked: 404 unknown, 409 refused, with why."""
    try:
        yield
    except tasks.UnknownTask as err:
        raise HTTPException(404, str(err)) from None
    except tasks.TaskRefused as err:
        raise HTTPException(409, str(err)) from None
    except LedgerError as err:  # a filter or parameter the ledger cannot use
        raise HTTPException(422, str(err)) from None
