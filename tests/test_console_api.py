"""The collectors' JSON API through a real stack (dev server, worker, ledger, web app), for
every role: a viewer reads, a collector acts, only an admin writes off; every step audited."""

from __future__ import annotations

import csv
import io

from ledger.api_keys import create_api_key
from ledger.db import session_scope
from ledger.models import Role
from ledger.users import add_user
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


async def test_a_dispute_ends_in_a_credit_or_a_void_by_the_roles_that_may(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("C-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        await p.harness.start("C-2", due_on=DUE, amount_minor=20_000, customer_id="cust-1")
        key = keys_for_every_role(p)
        http = p.http
        credit = {"amount": "25.00", "reason": "two units arrived damaged", "request_id": "c-1"}
        void = {"reason": "issued twice", "request_id": "v-1"}
        message = {"template": "overdue_friendly", "request_id": "m-1"}

        for role, action, body in (
            ("viewer", "credit", credit),
            ("viewer", "void", void),
            ("viewer", "message", message),
            ("collector", "void", void),
        ):
            refused = await http.post(f"/api/invoices/C-2/{action}", json=body, headers=key[role])
            needed = "admin" if action == "void" else "collector"
            assert refused.status_code == 403, (role, action, refused.text)
            assert f"{action} needs the {needed} role" in refused.json()["detail"]

        for bad, field in (
            ({**credit, "amount": "25.001"}, ["body", "amount"]),
            ({**credit, "amount": "-5.00"}, ["body", "amount"]),
            ({**credit, "amount": "25,00"}, ["body", "amount"]),
            ({**credit, "reason": "   "}, ["body", "reason"]),
            ({"reason": "no amount", "request_id": "c-0"}, ["body", "amount"]),
        ):
            refused = await http.post(
                "/api/invoices/C-1/credit", json=bad, headers=key["collector"]
            )
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["detail"][0]["loc"] == field, (bad, refused.text)
        refused = await http.post("/api/invoices/C-1/credit", json=credit | {"amount": "0.001"})
        assert refused.status_code == 401
        assert p.harness.invoice("C-1").balance_minor == 10_000  # nothing recorded

        dispute = {"reason_code": "damaged_goods", "request_id": "d-1"}
        disputed = await http.post(
            "/api/invoices/C-1/dispute", json=dispute, headers=key["collector"]
        )
        assert disputed.status_code == 200 and disputed.json()["stage"] == "disputed"
        for _ in range(2):  # the same request id twice is one credit
            credited = await http.post(
                "/api/invoices/C-1/credit", json=credit, headers=key["collector"]
            )
            assert credited.status_code == 200, credited.text
        assert credited.json()["balance_minor"] == 7_500
        assert p.harness.invoice("C-1").balance_minor == 7_500
        credits = [e for e in credited.json()["timeline"] if e["event"] == "credit"]
        assert [(c["amount_minor"], c["detail"]) for c in credits] == [
            (-2_500, "two units arrived damaged")
        ]

        refused = await http.post(
            "/api/invoices/C-2/void", json={**void, "reason": " "}, headers=key["admin"]
        )
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
            "body",
            "reason",
        ]
        voided = await http.post("/api/invoices/C-2/void", json=void, headers=key["admin"])
        assert voided.status_code == 200, voided.text
        assert (voided.json()["status"], voided.json()["balance_minor"]) == ("void", 0)
        ledger = p.harness.invoice("C-2")
        assert (ledger.status, ledger.balance_minor) == ("void", 0)
        again = await http.post(
            "/api/invoices/C-2/credit", json={**credit, "request_id": "c-3"}, headers=key["admin"]
        )
        # A void invoice takes no credit: refused by its workflow, or gone once it has closed.
        assert (again.status_code, again.json()["detail"]) in (
            (409, "cannot adjust invoice C-2: it is void"),
            (404, "no open invoice C-2"),
        )

        exported = await http.get("/api/audit?format=csv", headers=key["viewer"])
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        done = {(r["action"], r["actor"], r["invoice"]) for r in rows}
        assert ("adjustment_credit", "collector@example.com", "C-1") in done
        assert ("adjustment_void", "admin@example.com", "C-2") in done


async def test_a_collector_sends_the_payer_a_one_off_message(tmp_path) -> None:
    async with portal(tmp_path) as p:
        await p.harness.start("M-1", due_on=DUE, amount_minor=10_000, customer_id="cust-1")
        key = keys_for_every_role(p)
        url = "/api/invoices/M-1/message"
        outbox = p.harness.settings.effective_outbox_dir

        unknown = await p.http.post(
            url, json={"template": "receipt", "request_id": "m-0"}, headers=key["collector"]
        )
        assert unknown.status_code == 422
        [problem] = unknown.json()["detail"]
        assert problem["loc"] == ["body", "template"]
        assert "no message template 'receipt'" in problem["msg"]
        assert "overdue_friendly" in problem["msg"] and "checkout_receipt" not in problem["msg"]
        for channels in (["fax"], [], "email"):
            body = {"template": "overdue_friendly", "channels": channels, "request_id": "m-0"}
            refused = await p.http.post(url, json=body, headers=key["collector"])
            assert refused.status_code == 422, (channels, refused.text)
            assert refused.json()["detail"][0]["loc"][:2] == ["body", "channels"]
        assert not outbox.exists() or not list(outbox.rglob("*.eml"))

        # Sent at once even while dunning waits on a dispute; the same request id is one send.
        dispute = {"reason_code": "damaged_goods", "request_id": "d-1"}
        disputed = await p.http.post(
            "/api/invoices/M-1/dispute", json=dispute, headers=key["collector"]
        )
        assert disputed.json()["stage"] == "disputed"
        message = {"template": "overdue_friendly", "request_id": "m-1"}  # email by default
        for _ in range(2):
            sent = await p.http.post(url, json=message, headers=key["collector"])
            assert sent.status_code == 200, sent.text
        [email] = (outbox / "email").glob("*.eml")
        assert "M-1" in email.read_text()
        entries = [e for e in sent.json()["timeline"] if e["template"] == "overdue_friendly"]
        assert [(e["event"], e["channel"]) for e in entries] == [("message", "email")]
        assert sent.json()["stage"] == "disputed"  # a message does not resume dunning

        both = {"template": "due_today", "channels": ["sms", "email", "sms"], "request_id": "m-2"}
        sent = await p.http.post(url, json=both, headers=key["admin"])
        assert sent.status_code == 200, sent.text
        assert len(list((outbox / "email").glob("*.eml"))) == 2
        assert len((outbox / "sms.jsonl").read_text().splitlines()) == 1
        entries = [e for e in sent.json()["timeline"] if e["template"] == "due_today"]
        assert sorted((e["event"], e["channel"]) for e in entries) == [
            ("message", "email"),
            ("message", "sms"),
        ]
