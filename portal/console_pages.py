"""The collector console's pages: the worklist, one customer's case with its actions, and the
audit export. Behind login (`portal.auth.console_actor`); every form carries the session's
CSRF token and a fresh request id, and goes through the same `casework.actions` as the API.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from casework import actions
from casework.cases import UnknownCase, load_case
from ledger import audit_export, routing, tasks
from ledger.books import LedgerError
from ledger.db import session_scope
from ledger.models import Role
from ledger.users import find_user
from policies.schema import PRIORITIES
from portal.auth import Actor, console_actor
from portal.links import now
from portal.pages import REASON_CHOICES, render

router = APIRouter(prefix="/console", include_in_schema=False)
Viewer = Annotated[Actor, Depends(console_actor(Role.VIEWER))]
TASK_CHANGES = ("claim", "release", "reassign")


@router.get("")
async def worklist(
    request: Request,
    actor: Viewer,
    queue: str | None = None,
    segment: str | None = None,
    currency: str | None = None,
    min_days_past_due: str | None = None,
    max_days_past_due: str | None = None,
    mine: bool = False,
) -> Response:
    filters = {
        "queue": queue or "",
        "segment": segment or "",
        "currency": currency or "",
        "min_days_past_due": min_days_past_due or "",
        "max_days_past_due": max_days_past_due or "",
    }
    page = {"actor": actor, "tasks": [], "filters": filters, "mine": mine, "workers": []}
    try:
        with session_scope(request.app.state.services.engine) as session:
            page["workers"] = routing.task_workers(session)
            page["tasks"] = tasks.worklist(
                session,
                today=now().date(),
                queue=queue or None,
                segment=segment or None,
                currency=currency.upper() if currency else None,
                min_days_past_due=_whole_days("min_days_past_due", min_days_past_due),
                max_days_past_due=_whole_days("max_days_past_due", max_days_past_due),
                assignee_id=actor.user_id if mine else None,
            )
    except LedgerError as err:
        return render(request, "console_worklist.html", {**page, "error": str(err)}, 422)
    return render(request, "console_worklist.html", page)


def _whole_days(name: str, text: str | None) -> int | None:
    """A days-past-due filter from the form: blank is no filter."""
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        message = f"worklist: {name} must be a whole number of days, got {text!r}"
        raise LedgerError(message) from None


@router.get("/customers/{customer_id}")
async def case_page(request: Request, customer_id: str, actor: Viewer) -> Response:
    return await _case_view(request, customer_id, actor)


async def _case_view(
    request: Request,
    customer_id: str,
    actor: Actor,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        case = await load_case(request.app.state.services, customer_id)
    except UnknownCase as err:
        return render(request, "console_message.html", {"actor": actor, "message": str(err)}, 404)
    return render(
        request,
        "console_case.html",
        {
            "actor": actor,
            "case": case,
            "error": error,
            "reason_codes": REASON_CHOICES,
            "priorities": PRIORITIES,
            "message_templates": actions.message_templates(),
            "request_id": lambda: str(uuid.uuid4()),
            "can_act": actor.can(Role.COLLECTOR),
            "can_write_off": actor.can(Role.ADMIN),
        },
        status_code=status_code,
    )


@router.post("/invoices/{number}/{action}")
async def act(request: Request, number: str, action: str, actor: Viewer) -> Response:
    form = await request.form()
    customer_id = str(form.get("customer_id", ""))
    fields = {k: v for k, v in form.items() if k not in ("csrf_token", "customer_id") and v != ""}
    try:
        model = actions.BODIES.get(action)
        if model is None:
            raise actions.ActionRefused(404, f"no action {action!r}")
        if action == "plan":
            fields["installments"] = _installment_lines(str(fields.get("installments", "")))
        if action == "message":  # checkboxes: every one ticked
            fields["channels"] = form.getlist("channels")
            if not fields["channels"]:
                raise actions.ActionRefused(422, "channels: tick email, SMS or both")
        body = model.model_validate(fields)
        await actions.perform(
            request.app.state.services,
            role=actor.role,
            actor=actor.audit_name,
            number=number,
            action=action,
            body=body,
        )
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        error = f"{where}: {problem['msg']}"
        return await _case_view(request, customer_id, actor, error=error, status_code=422)
    except actions.ActionRefused as refused:
        return await _case_view(
            request, customer_id, actor, error=refused.message, status_code=refused.status
        )
    return RedirectResponse(f"/console/customers/{customer_id}", status_code=303)


def _installment_lines(text: str) -> list[dict[str, str]]:
    """The plan form's installments, one `YYYY-MM-DD AMOUNT` a line."""
    installments = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise actions.ActionRefused(
                422,
                f"installments, line {number}: write a date and an amount, like 2026-12-24 100.00",
            )
        installments.append({"due_on": parts[0], "amount": parts[1]})
    return installments


@router.post("/tasks/{task_id}/{change}")
async def task_change(request: Request, task_id: int, change: str, actor: Viewer) -> Response:
    if not actor.can(Role.COLLECTOR):
        return render(
            request,
            "console_message.html",
            {"actor": actor, "message": "viewers cannot claim"},
            403,
        )
    if change not in TASK_CHANGES:
        message = {"actor": actor, "message": f"no such change to a task: {change!r}"}
        return render(request, "console_message.html", message, 404)
    to = str((await request.form()).get("to", ""))
    with session_scope(request.app.state.services.engine) as session:
        try:
            if change == "claim":
                tasks.claim(session, task_id, actor.user_id, actor.audit_name)
            elif change == "release":
                tasks.release(
                    session, task_id, actor.user_id, actor.audit_name, admin=actor.can(Role.ADMIN)
                )
            else:
                user = find_user(session, to)
                if user is None:
                    raise tasks.TaskRefused(f"collector task {task_id}: no user {to!r}")
                tasks.reassign(session, task_id, user.id, actor.audit_name)
        except (tasks.UnknownTask, tasks.TaskRefused) as err:
            message = {"actor": actor, "message": str(err)}
            return render(request, "console_message.html", message, 409)
    return RedirectResponse("/console", status_code=303)


@router.get("/audit.csv")
async def audit_csv(request: Request, actor: Viewer, invoice: str | None = None) -> Response:
    with session_scope(request.app.state.services.engine) as session:
        rows = audit_export.audit_rows(session, invoice_number=invoice or None)
    return Response(
        audit_export.audit_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="dunwise-audit.csv"'},
    )
