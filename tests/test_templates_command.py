"""`dunwise templates list|preview`: the installed command in a subprocess, with Temporal on a
closed loopback port, so a preview that tried to reach a server would fail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from activities.template_files import available_templates
from tests.test_cli_errors import DUNWISE, closed_port, dunwise_env


def templates(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return templates_with(tmp_path, {}, *args)


def templates_with(
    tmp_path: Path, settings: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = dunwise_env(
        tmp_path,
        f"127.0.0.1:{closed_port()}",
        DUNWISE_COMPANY_NAME="Northwind Traders",
        **settings,
    )
    return subprocess.run(
        [DUNWISE, "templates", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_list_names_every_template_a_policy_can_use(tmp_path: Path) -> None:
    done = templates(tmp_path, "list", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"templates": sorted(available_templates())}


def test_an_email_preview_shows_subject_and_text_with_sample_data(tmp_path: Path) -> None:
    done = templates(tmp_path, "preview", "courtesy", "--days-past-due", "-3")
    assert done.returncode == 0, done.stderr
    first, blank, *body = done.stdout.splitlines()
    assert first.startswith("Subject: Invoice INV-1001 from Northwind Traders is due on ")
    assert blank == ""
    assert "Hello Acme Corp," in body
    assert any("$1,250.00" in line for line in body)
    assert any("/pay/" in line for line in body)


def test_a_german_sms_preview_has_german_money(tmp_path: Path) -> None:
    done = templates(
        tmp_path,
        "preview",
        "due_today",
        "--channel",
        "sms",
        "--locale",
        "de-DE",
        "--currency",
        "EUR",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    sms = json.loads(done.stdout)
    assert (sms["template"], sms["channel"], sms["locale"]) == ("due_today", "sms", "de-DE")
    assert "1.250,00 €" in sms["text"]  # one line: the no-break space becomes a space
    assert sms["subject"] is None and sms["html"] is None


def test_a_grouped_preview_lists_every_invoice_and_the_total(tmp_path: Path) -> None:
    done = templates(
        tmp_path, "preview", "overdue_firm", "--invoices", "3", "--days-past-due", "21", "--json"
    )
    assert done.returncode == 0, done.stderr
    email = json.loads(done.stdout)
    assert "invoices INV-1001, INV-1002 and INV-1003" in email["subject"]
    assert "$3,750.00" in email["text"]
    assert "INV-1003" in email["html"]


def test_a_receipt_preview_is_paid_in_full(tmp_path: Path) -> None:
    done = templates(tmp_path, "preview", "receipt", "--html")
    assert done.returncode == 0, done.stderr
    assert done.stdout.lstrip().startswith("<!DOCTYPE html>")
    assert "$0.00" in done.stdout  # the remaining balance


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["nope"], "no message template named 'nope' for email"),
        (["courtesy", "--locale", "xx-YY"], "--locale: 'xx-YY' is not a locale like en"),
        (["courtesy", "--currency", "ABC"], "--currency: unknown currency 'ABC'"),
        (["courtesy", "--channel", "sms", "--html"], "an SMS has no HTML part"),
        (["courtesy", "--invoices", "0"], "--invoices must be between 1 and 50, got 0"),
    ],
)
def test_bad_preview_input_is_one_clear_line(tmp_path: Path, args: list[str], problem: str) -> None:
    done = templates(tmp_path, "preview", *args)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("dunwise templates: ")
    assert problem in line


def test_finance_ops_templates_override_and_add_to_the_shipped_ones(tmp_path: Path) -> None:
    own = tmp_path / "our-templates"
    own.mkdir()
    # Override one file of a shipped template; the rest of it stays the shipped one.
    (own / "courtesy.subject.txt").write_text("A gentle note about {{ invoices_text }}")
    # A template of our own, on the shipped layout.
    (own / "thank_you.subject.txt").write_text("Thank you, {{ customer_name }}")
    (own / "thank_you.txt").write_text(
        '{% extends "_base.txt" %}{% block body %}We value you.{% endblock %}'
    )
    (own / "thank_you.html").write_text(
        '{% extends "_base.html" %}{% block body %}<p>We value you.</p>{% endblock %}'
    )
    (own / "thank_you.sms.txt").write_text("{{ company_name }}: thank you!")
    env = {"DUNWISE_TEMPLATES_DIR": str(own)}

    listed = templates_with(tmp_path, env, "list", "--json")
    assert "thank_you" in json.loads(listed.stdout)["templates"]
    courtesy = json.loads(templates_with(tmp_path, env, "preview", "courtesy", "--json").stdout)
    assert courtesy["subject"] == "A gentle note about invoice INV-1001"
    assert "friendly reminder" in courtesy["text"]  # the shipped body
    thanks = json.loads(templates_with(tmp_path, env, "preview", "thank_you", "--json").stdout)
    assert thanks["subject"] == "Thank you, Acme Corp"
    assert "We value you." in thanks["text"] and "<p>We value you.</p>" in thanks["html"]

    # Without the setting, only the shipped templates exist.
    assert "thank_you" not in json.loads(templates(tmp_path, "list", "--json").stdout)["templates"]


def test_emails_carry_the_senders_brand_signature_and_legal_footer(tmp_path: Path) -> None:
    brand = {
        "DUNWISE_BRAND_COLOR": "#0a7d3b",
        "DUNWISE_LOGO_URL": "https://cdn.northwind.example/logo.png",
        "DUNWISE_EMAIL_SIGNATURE": "Jo Park, Credit Control",
        "DUNWISE_LEGAL_FOOTER": "Northwind Traders Ltd, 1 Harbour St, Leeds. Company no. 0123456.",
    }
    email = json.loads(templates_with(tmp_path, brand, "preview", "due_today", "--json").stdout)
    assert "Kind regards,\nJo Park, Credit Control" in email["text"]
    assert email["text"].rstrip().endswith("Company no. 0123456.")
    html = email["html"]
    assert '<img src="https://cdn.northwind.example/logo.png" alt="Northwind Traders"' in html
    assert "background:#0a7d3b" in html  # the pay button
    assert "Jo Park, Credit Control" in html and "Company no. 0123456." in html

    plain = json.loads(templates(tmp_path, "preview", "due_today", "--json").stdout)
    assert "Kind regards,\nAccounts Receivable, Northwind Traders" in plain["text"]
    assert "<img" not in plain["html"] and "Company no." not in plain["text"]
