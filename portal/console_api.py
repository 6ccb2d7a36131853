"""The collector's JSON API on one invoice: its state and timeline, and every action the
console offers (`casework.actions`), authorized by `Authorization: Bearer <api key>`.

A refusal keeps its reason: 403 for a role that may not act, 404 for no such invoice, 409 when
the invoice turns the request down, 422 for bad input naming the field.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from casework import actions
from casework.actions import (
    CreditIn,
    DisputeIn,
    EscalateIn,
    MessageIn,
    NoteIn,
    OutcomeIn,
    PlanIn,
    PromiseIn,
    VoidIn,
    WriteOffIn,
)
from invoices import invoice_state_from_ledger, workflow_id
from ledger.models import Role
from portal.auth import Actor, api_actor
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceState

router = APIRouter(prefix="/api/invoices", tags=["collectors"])
Viewer = Annotated[Actor, Depends(api_actor(Role.VIEWER))]


@router.get("/{number}", response_model=InvoiceState)
async def invoice(request: Request, number: str, actor: Viewer) -> InvoiceState:
    """State and timeline: from the workflow, or from the ledger once Temporal forgot it."""
    services = request.app.state.services
    client = await services.temporal()
    handle = client.get_workflow_handle_for(InvoiceWorkflow.run, workflow_id(number))
    try:
        return await handle.query(InvoiceWorkflow.state)
    except (RPCError, WorkflowQueryFailedError):
        state = invoice_state_from_ledger(services.engine, number)
    if state is None:
        raise HTTPException(404, f"no invoice {number}")
    return state


async def _act(request: Request, actor: Actor, number: str, action: str, body) -> InvoiceState:
    try:
        return await actions.perform(
            request.app.state.services,
            role=actor.role,
            actor=actor.audit_name,
            number=number,
            action=action,
            body=body,
        )
    except actions.ActionRefused as refused:
        if refused.status == 422:
            detail = [
                {"loc": ["body", refused.field], "msg": refused.message, "type": "value_error"}
            ]
            raise HTTPException(422, detail) from None
        raise HTTPException(refused.status, refused.message) from None


@router.post("/{number}/notes", response_model=InvoiceState)
async def add_note(request: Request, number: str, body: NoteIn, actor: Viewer) -> InvoiceState:
    """Log a note, or a call (`"kind": "call"`)."""
    return await _act(request, actor, number, "notes", body)


@router.post("/{number}/promise", response_model=InvoiceState)
async def promise(request: Request, number: str, body: PromiseIn, actor: Viewer) -> InvoiceState:
    """A promise to pay: reminders wait until the date plus the policy's grace."""
    return await _act(request, actor, number, "promise", body)


@router.post("/{number}/dispute", response_model=InvoiceState)
async def dispute(request: Request, number: str, body: DisputeIn, actor: Viewer) -> InvoiceState:
    """A dispute with its reason code: dunning pauses until a collector resumes it."""
    return await _act(request, actor, number, "dispute", body)


@router.post("/{number}/resume", response_model=InvoiceState)
async def resume(request: Request, number: str, body: OutcomeIn, actor: Viewer) -> InvoiceState:
    return await _act(request, actor, number, "resume", body)


@router.post("/{number}/stop", response_model=InvoiceState)
async def stop(request: Request, number: str, body: OutcomeIn, actor: Viewer) -> InvoiceState:
    """No more reminders; the invoice waits for payment."""
    return await _act(request, actor, number, "stop", body)


@router.post("/{number}/escalate", response_model=InvoiceState)
async def escalate(request: Request, number: str, body: EscalateIn, actor: Viewer) -> InvoiceState:
    """Hand the invoice to a collector now: a task opens and reminders wait."""
    return await _act(request, actor, number, "escalate", body)


@router.post("/{number}/plan", response_model=InvoiceState)
async def plan(request: Request, number: str, body: PlanIn, actor: Viewer) -> InvoiceState:
    """A payment plan: installments by date that add up to the balance; reminders wait while
    they are kept, and a missed one resumes dunning and reopens a collector task."""
    return await _act(request, actor, number, "plan", body)


@router.post("/{number}/write-off", response_model=InvoiceState)
async def write_off(request: Request, number: str, body: WriteOffIn, actor: Viewer) -> InvoiceState:
    """Finance admins only."""
    return await _act(request, actor, number, "write-off", body)


@router.post("/{number}/credit", response_model=InvoiceState)
async def credit(request: Request, number: str, body: CreditIn, actor: Viewer) -> InvoiceState:
    """A credit note: lowers the balance by `amount`, for example to settle a dispute."""
    return await _act(request, actor, number, "credit", body)


@router.post("/{number}/void", response_model=InvoiceState)
async def void(request: Request, number: str, body: VoidIn, actor: Viewer) -> InvoiceState:
    """Cancel an invoice issued in error (none of it paid). Finance admins only."""
    return await _act(request, actor, number, "void", body)


@router.post("/{number}/message", response_model=InvoiceState)
async def message(request: Request, number: str, body: MessageIn, actor: Viewer) -> InvoiceState:
    """Send the payer one message from a template now, outside the schedule (even while
    dunning is paused); the timeline records it sent, or why not."""
    return await _act(request, actor, number, "message", body)
