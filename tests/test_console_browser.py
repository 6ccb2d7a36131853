"""A collector's morning in headless Chromium at phone size: log in, open an escalated case
from the worklist, record a promise to pay; the invoice's workflow pauses for it."""

from __future__ import annotations

from playwright.async_api import expect

from ledger.db import session_scope
from ledger.models import Role
from ledger.users import add_user
from tests.browser import UNLABELLED_CONTROLS, WIDTHS, phone_browser
from tests.portal_harness import DUE, portal
from workflows.invoice import InvoiceWorkflow
from workflows.models import ManualEscalation, Stage

PASSWORD = "correct horse battery staple"


async def test_collector_logs_in_and_records_a_promise_on_an_escalated_case(
    tmp_path, chromium
) -> None:
    async with portal(tmp_path) as p, phone_browser(chromium) as phone:
        handle = await p.harness.start("A-1", due_on=DUE, amount_minor=48_000, customer_id="cust-1")
        await handle.execute_update(InvoiceWorkflow.escalate, ManualEscalation(), id="esc")
        with session_scope(p.harness.engine) as session:
            add_user(session, "cole@example.com", PASSWORD, Role.COLLECTOR)
        page = phone.page

        await page.goto(f"{p.url}/console")
        await expect(page.get_by_label("Email")).to_be_visible()  # not logged in: the login page
        await page.get_by_label("Email").fill("cole@example.com")
        await page.get_by_label("Password").fill("wrong password, surely")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_be_visible()
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()

        await expect(page.get_by_role("heading", name="Worklist")).to_be_visible()
        assert await page.evaluate(UNLABELLED_CONTROLS) == []
        await page.get_by_role("link", name="Customer of A-1").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Customer of A-1")
        assert await page.locator("[data-stage='A-1']").inner_text() == "escalated"
        scroll_width, width = await page.evaluate(WIDTHS)
        assert scroll_width <= width

        await page.get_by_text("Act on A-1").click()
        await page.get_by_label("Promised pay date").fill("2099-12-31")
        await page.get_by_label("Amount (USD, default all)").fill("300.00")
        await page.get_by_role("button", name="Record promise to pay").click()
        await expect(page.locator("[data-stage='A-1']")).to_have_text("paused")
        assert await page.evaluate(UNLABELLED_CONTROLS) == []

        state = await handle.query(InvoiceWorkflow.state)
        assert state.stage == Stage.PAUSED
        assert (state.promise.pay_by.isoformat(), state.promise.amount_minor) == (
            "2099-12-31",
            30_000,
        )
