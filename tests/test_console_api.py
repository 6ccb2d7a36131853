"""The collectors' JSON API through a real stack (dev server, worker, ledger, web app), for
every role: a viewer reads, a collector acts, only an admin writes off; every step audited."""

from __future__ import annotations

import csv
import io

from ledger.db import session_scope
from ledger.models import Role
from ledger.users import add_user, create_api_key
from tests.portal_harness import DUE, portal


def keys_for_every_role(p) -> dict[str, dict[str, str]]:
    headers = {}
    with session_scope(p.harness.engine) as session:
        for role in Role:
            email = f"{role.value}@example.com"
            add_user(session, email, "correct horse battery staple", role)
            headers[role.value] = {"Authorization": f"Bearer {create_api_key(session, email)}"}
    return headers


async def test_every_role_does_what_it_may_and_nothing_more(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        await p.harness.start("A-2", due_on=DUE, amount_minor=20_000, customer_id="cust-1")
        key = keys_for_every_role(p)
        http = p.http

        assert (await http.get("/api/invoices/A-1")).status_code == 401
        bad_key = {"Authorization": "Bearer dw_00000000_" + "0" * 64}
        assert (await http.get("/api/invoices/A-1", headers=bad_key)).status_code == 401
        state = await http.get("/api/invoices/A-1", headers=key["viewer"])
        assert state.status_code == 200 and state.json()["balance_minor"] == 10_000

        note = {"text": "called AP, cheque in the post", "kind": "call", "request_id": "n-1"}
        viewer_note = await http.post("/api/invoices/A-1/notes", json=note, headers=key["viewer"])
        assert viewer_note.status_code == 403 and "collector" in viewer_note.json()["detail"]
        for _ in range(2):  # the same request id twice is one call logged
            logged = await http.post("/api/invoices/A-1/notes", json=note, headers=key["collector"])
            assert logged.status_code == 200, logged.text
        calls = [e for e in logged.json()["timeline"] if e["event"] == "call"]
        assert [c["detail"] for c in calls] == ["called AP, cheque in the post"]

        bad_date = {"pay_by": "next week", "request_id": "p-0"}
        refused = await http.post(
            "/api/invoices/A-1/promise", json=bad_date, headers=key["collector"]
        )
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
            "body",
            "pay_by",
        ]
        too_fine = {"pay_by": "2026-12-31", "amount": "10.001", "request_id": "p-1"}
        refused = await http.post(
            "/api/invoices/A-1/promise", json=too_fine, headers=key["collector"]
        )
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
            "body",
            "amount",
        ]
        promise = {
            "pay_by": "2099-12-31",
            "amount": "60.00",
            "note": "half now",
            "request_id": "p-2",
        }
        promised = await http.post(
            "/api/invoices/A-1/promise", json=promise, headers=key["collector"]
        )
        assert promised.status_code == 200, promised.text
        assert (promised.json()["stage"], promised.json()["promise"]["amount_minor"]) == (
            "paused",
            6_000,
        )

        dispute = {"reason_code": "not_a_reason", "request_id": "d-1"}
        refused = await http.post(
            "/api/invoices/A-2/dispute", json=dispute, headers=key["collector"]
        )
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
            "body",
            "reason_code",
        ]

        escalate = {"request_id": "e-1", "note": "big balance"}
        escalated = await http.post(
            "/api/invoices/A-2/escalate", json=escalate, headers=key["collector"]
        )
        assert escalated.status_code == 200 and escalated.json()["stage"] == "escalated"
        again = {"request_id": "e-2"}
        refused = await http.post(
            "/api/invoices/A-2/escalate", json=again, headers=key["collector"]
        )
        assert refused.status_code == 409 and "with a collector" in refused.json()["detail"]

        [task] = (await http.get("/api/tasks", headers=key["viewer"])).json()
        assert (
            task["invoice"],
            task["queue"],
            task["priority"],
            task["status"],
            task["assignee"],
        ) == ("A-2", "collections", "high", "open", None)
        assert (
            await http.post(f"/api/tasks/{task['id']}/claim", headers=key["viewer"])
        ).status_code == 403
        claimed = await http.post(f"/api/tasks/{task['id']}/claim", headers=key["collector"])
        assert claimed.json()["assignee"] == "collector@example.com"
        taken = await http.post(f"/api/tasks/{task['id']}/claim", headers=key["admin"])
        assert taken.status_code == 409 and "collector@example.com" in taken.json()["detail"]
        mine = await http.get("/api/tasks?mine=true", headers=key["collector"])
        assert [t["id"] for t in mine.json()] == [task["id"]]

        write_off = {"reason": "customer insolvent", "request_id": "w-1"}
        refused = await http.post(
            "/api/invoices/A-2/write-off", json=write_off, headers=key["collector"]
        )
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        written = await http.post(
            "/api/invoices/A-2/write-off", json=write_off, headers=key["admin"]
        )
        assert written.status_code == 200 and written.json()["status"] == "written_off"

        exported = await http.get("/api/audit?format=csv", headers=key["viewer"])
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        done = {(r["action"], r["actor"], r["invoice"], r["request_id"]) for r in rows}
        assert ("call_logged", "collector@example.com", "A-1", "n-1") in done
        assert ("collector_task_claimed", "collector@example.com", "A-2", "") in {
            (a, b, c, "") for a, b, c, _ in done
        }
        assert any(a == "adjustment_write_off" and b == "admin@example.com" for a, b, _, _ in done)
        assert sum(1 for r in rows if r["action"] == "call_logged") == 1


async def test_a_collector_offers_a_payment_plan_through_the_api(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("A-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        key = keys_for_every_role(p)
        url = "/api/invoices/A-1/plan"
        bad = {
            "installments": [{"due_on": "2099-01-01", "amount": "40.001"}],
            "request_id": "plan-0",
        }
        refused = await p.http.post(url, json=bad, headers=key["collector"])
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "installments[0].amount"]
        short = {"installments": [{"due_on": "2099-01-01", "amount": "40.00"}], "request_id": "p-1"}
        refused = await p.http.post(url, json=short, headers=key["collector"])
        assert (
            refused.status_code == 409 and "the balance is 100.00 USD" in refused.json()["detail"]
        )
        assert (await p.http.post(url, json=short, headers=key["viewer"])).status_code == 403
        good = {
            "installments": [
                {"due_on": "2099-01-01", "amount": "40.00"},
                {"due_on": "2099-02-01", "amount": "60.00"},
            ],
            "note": "agreed on the phone",
            "request_id": "p-2",
        }
        offered = await p.http.post(url, json=good, headers=key["collector"])
        assert offered.status_code == 200, offered.text
        state = offered.json()
        assert state["stage"] == "on_plan" and len(state["plan"]["installments"]) == 2
