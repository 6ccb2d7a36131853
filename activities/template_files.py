"""Where the message templates are and which names have all their files.

Each message template NAME has four files: NAME.subject.txt, NAME.txt and NAME.html for email,
NAME.sms.txt for SMS; files starting with "_" are shared layouts and macros. The shipped ones
are in templates/messages/; finance ops override any file, or add templates, in the folder
`DUNWISE_TEMPLATES_DIR`, which is searched first (a file there replaces the shipped file of the
same name; the rest still come from the shipped folder). Knowing the names needs no Jinja2:
`dunwise policy check` asks without rendering.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "messages"
EMAIL_PARTS = ("subject.txt", "txt", "html")
SMS_PARTS = ("sms.txt",)


def template_folders() -> tuple[Path, ...]:
    """The folders searched for a template file, finance ops' own first."""
    from settings import get_settings

    own = get_settings().templates_dir
    return (own, TEMPLATE_DIR) if own is not None else (TEMPLATE_DIR,)


def template_file(name: str) -> Path | None:
    """The file a template name's part comes from (NAME.txt, ...), or None."""
    for folder in template_folders():
        if (folder / name).is_file():
            return folder / name
    return None


def available_templates() -> set[str]:
    """Template names that have every file for both channels."""
    names = {
        path.name.split(".", 1)[0] for folder in template_folders() for path in folder.glob("*.*")
    }
    return {
        name
        for name in names
        if not name.startswith("_")
        and all(template_file(f"{name}.{part}") for part in EMAIL_PARTS + SMS_PARTS)
    }
