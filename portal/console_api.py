"""The collector's JSON API on one invoice: its state and timeline, and every action the
console offers (`casework.actions`, one route each), authorized by `Authorization: Bearer
<api key>`.

A refusal keeps its reason: 403 for a role that may not act, 404 for no such invoice, 409 when
the invoice turns the request down, 422 for bad input naming the field.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from casework import actions
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


# What each action's route does, for the API's reader.
DESCRIPTIONS = {
    "notes": 'Log a note, or a call (`"kind": "call"`).',
    "promise": "A promise to pay: reminders wait until the date plus the policy's grace.",
    "dispute": "A dispute with its reason code: dunning pauses until a collector resumes it.",
    "stop": "No more reminders; the invoice waits for payment.",
    "escalate": "Hand the invoice to a collector now: a task opens and reminders wait.",
    "plan": "A payment plan: installments by date that add up to the balance; reminders wait "
    "while they are kept, and a missed one resumes dunning and reopens a collector task.",
    "write-off": "Finance admins only.",
    "credit": "A credit note: lowers the balance by `amount`, for example to settle a dispute.",
    "void": "Cancel an invoice issued in error (none of it paid). Finance admins only.",
    "message": "Send the payer one message from a template now, outside the schedule (even "
    "while dunning is paused); the timeline records it sent, or why not.",
}


def _action_route(action: str, body_model: type[BaseModel]) -> None:
    """`POST /api/invoices/{number}/<action>`: the action's body in, the invoice's state out."""

    async def act(request: Request, number: str, body: BaseModel, actor: Viewer) -> InvoiceState:
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

    # FastAPI reads and validates the body by its annotation: the action's own model.
    act.__annotations__["body"] = body_model
    act.__name__ = act.__qualname__ = action.replace("-", "_")
    act.__doc__ = DESCRIPTIONS.get(action)
    router.post(f"/{{number}}/{action}", response_model=InvoiceState)(act)


for _action, _body_model in actions.BODIES.items():
    _action_route(_action, _body_model)
