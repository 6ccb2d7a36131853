"""Where the message templates are and which names have all their files.

Each message template NAME has four files in templates/messages/: NAME.subject.txt, NAME.txt
and NAME.html for email, NAME.sms.txt for SMS; files starting with "_" are shared layouts and
macros. Knowing the names needs no Jinja2: `dunwise policy check` asks without rendering.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "messages"
EMAIL_PARTS = ("subject.txt", "txt", "html")
SMS_PARTS = ("sms.txt",)


def available_templates() -> set[str]:
    """Template names that have every file for both channels."""
    names = {path.name.split(".", 1)[0] for path in TEMPLATE_DIR.glob("*.*")}
    return {
        name
        for name in names
        if not name.startswith("_")
        and all((TEMPLATE_DIR / f"{name}.{part}").is_file() for part in EMAIL_PARTS + SMS_PARTS)
    }
