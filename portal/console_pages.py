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
from ledger import audit_export, tasks
from ledger.db import session_scope
from ledger.models import Role, ShortPayReason
from policies.schema import PRIORITIES
from portal.auth import Actor, console_actor
from portal.links import now
from portal.pages import render

router = APIRouter(prefix="/console", include_in_schema=False)
Viewer = Annotated[Actor, Depends(console_actor(Role.VIEWER))]
REASON_CODES = [(r.value, r.value.replace("_", " ").capitalize()) for r in ShortPayReason]


@router.get("")
async def worklist(
    request: Request,
    actor: Viewer,
    queue: str | None = None,
    segment: str | None = None,
    currency: str | None = None,
    mine: bool = False,
) -> Response:
    with session_scope(request.app.state.services.engine) as session:
        views = tasks.worklist(
            session,
            today=now().date(),
            queue=queue or None,
            segment=segment or None,
            currency=currency.upper() if currency else None,
            assignee_id=actor.user_id if mine else None,
        )
    filters = {"queue": queue or "", "segment": segment or "", "currency": currency or ""}
    return render(
        request,
        "console_worklist.html",
        {"actor": actor, "tasks": views, "filters": filters, "mine": mine},
    )


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
            "reason_codes": REASON_CODES,
            "priorities": PRIORITIES,
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
    with session_scope(request.app.state.services.engine) as session:
        try:
            if change == "claim":
                tasks.claim(session, task_id, actor.user_id, actor.audit_name)
            elif change == "release":
                tasks.release(
                    session, task_id, actor.user_id, actor.audit_name, admin=actor.can(Role.ADMIN)
                )
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
