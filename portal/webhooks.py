"""Provider webhooks. Stripe's at `/webhooks/stripe`: signature verified before anything is
read (bad or missing: 400, nothing recorded), idempotent by event id, any order."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from payments.settlement import NotYet, handle_event
from payments.stripe_webhooks import WebhookSignatureError, verify_event

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post("/stripe")
async def stripe_webhook(request: Request) -> JSONResponse:
    services = request.app.state.services
    payload = await request.body()
    try:
        event = verify_event(
            payload,
            request.headers.get("Stripe-Signature"),
            services.settings.stripe_webhook_secret.get_secret_value(),
        )
    except WebhookSignatureError as err:
        return JSONResponse({"error": str(err)}, status_code=400)
    try:
        outcome = await handle_event(services, event)
    except NotYet as err:
        # Stripe retries a non-2xx answer; by then the payment it refers to has landed.
        return JSONResponse({"error": str(err)}, status_code=409)
    return JSONResponse({"received": event["id"], "outcome": outcome})
