"""The payer's documents as PDFs: one invoice, and the statement of the whole account.

Scoped by the pay token like every payer page; each PDF is in the customer's locale and the
company's brand, shown inline. An invoice's PDF counts as a view on its timeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from payments.portal_events import note_in_background
from portal.links import open_link
from portal.payer_api import account_view
from portal.payer_pages import invoice_of
from portal.pdf import invoice_pdf, statement_pdf
from workflows.models import PortalEventKind

router = APIRouter(prefix="/pay", include_in_schema=False)


@router.get("/{token}/invoices/{number}/pdf")
async def invoice_as_pdf(request: Request, token: str, number: str) -> Response:
    pay = open_link(request, token)
    detail = invoice_of(request, pay.customer_id, number)
    note_in_background(
        request.app.state.services, [number], PortalEventKind.INVOICE_VIEWED, "as PDF"
    )
    return _pdf(request, invoice_pdf, detail, f"invoice-{number}.pdf", locale=pay.locale)


@router.get("/{token}/statement.pdf")
async def statement(request: Request, token: str) -> Response:
    pay = open_link(request, token)
    account = account_view(request, pay.customer_id)
    filename = f"statement-{account.as_of.isoformat()}.pdf"
    return _pdf(request, statement_pdf, account, filename, today=account.as_of)


def _pdf(
    request: Request, make_pdf: Callable[..., bytes], subject: Any, filename: str, **options: Any
) -> Response:
    """The subject as a PDF in the company's brand, shown inline."""
    settings = request.app.state.services.settings
    document = make_pdf(
        subject, company_name=settings.company_name, brand_color=settings.brand_color, **options
    )
    return Response(
        document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )
