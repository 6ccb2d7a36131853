"""The web app: the payer's portal (`/pay/<token>`), its JSON API (`/api/portal/...`), provider
webhooks (`/webhooks/...`), and the collector console (`/console`) with its JSON API
(`/api/invoices/...`, `/api/tasks`, `/api/audit`). Routes are thin: they read the request,
call the same services the command line uses, and render the answer.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.checkout_drafts import CheckoutItemError
from payments.services import PaymentServices
from portal import (
    consent_pages,
    console_api,
    console_auth,
    console_pages,
    payer_api,
    payer_documents,
    payer_pages,
    sendgrid_webhooks,
    tasks_api,
    twilio_webhooks,
    webhooks,
)
from portal.links import LinkProblem
from portal.pages import render

STATIC_DIR = Path(__file__).resolve().parent.parent / "templates" / "pages" / "static"


def create_app(services: PaymentServices) -> FastAPI:
    app = FastAPI(
        title="dunwise",
        summary="Customer payment portal, its JSON API and provider webhooks",
        version="0.1.0",
    )
    app.state.services = services
    app.include_router(payer_pages.router)
    app.include_router(payer_documents.router)
    app.include_router(payer_api.router)
    app.include_router(webhooks.router)
    app.include_router(twilio_webhooks.router)
    app.include_router(sendgrid_webhooks.router)
    app.include_router(consent_pages.router)
    app.include_router(console_auth.router)
    app.include_router(console_pages.router)
    app.include_router(console_api.router)
    app.include_router(tasks_api.router)

    @app.exception_handler(LinkProblem)
    async def _link_problem(request: Request, problem: LinkProblem) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": problem.message}, status_code=problem.status)
        return render(
            request,
            "link_problem.html",
            {"problem": problem, "token": request.path_params.get("token")},
            status_code=problem.status,
            locale=problem.locale,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _refused(request: Request, err: StarletteHTTPException) -> Response:
        # A console page refused (a role, a missing CSRF token) answers as a page; the rest,
        # and every API route, as FastAPI's JSON.
        if request.url.path.startswith("/console") and err.status_code in (403, 404):
            return render(
                request,
                "console_refused.html",
                {"message": err.detail},
                status_code=err.status_code,
            )
        return await http_exception_handler(request, err)

    @app.exception_handler(CheckoutItemError)
    async def _bad_item(request: Request, err: CheckoutItemError) -> Response:
        return JSONResponse(
            {
                "detail": [
                    {
                        "loc": ["body", "items", err.index, err.field],
                        "msg": str(err),
                        "type": "value_error",
                    }
                ]
            },
            status_code=422,
        )

    @app.middleware("http")
    async def _private_pages(request: Request, call_next) -> Response:
        response = await call_next(request)
        # The pay token is in the URL, the console shows customers' affairs: never let either
        # leak through a Referer, a shared cache or a page framed by another site.
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        if request.url.path.startswith(("/pay/", "/api/", "/console")):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/healthz", include_in_schema=False)
    async def _health() -> dict[str, str]:
        return {"status": "ok"}

    return app
