"""Where the message templates are and which names have all their files.

Each message template NAME has four files: NAME.subject.txt, NAME.txt and NAME.html for email,
NAME.sms.txt for SMS; files starting with "_" are shared layouts and macros. The shipped ones
are in templates/messages/; finance ops override any file, or add templates, in the folder
`DUNWISE_TEMPLATES_DIR`, which is searched first (a file there replaces the shipped file of the
same name; the rest still come from the shipped folder). Knowing the names needs no Jinja2:
`dunwise policy check` asks without rendering.

Languages: English files sit at the top of each folder; a translation sits in a subfolder named
for the language (`de/`, `fr/`, `es/`) with the same file names. The layouts and building
blocks (`_base.*`, `_macros.*`) are shared by every language: they take their words from
`_words.txt`, which each language has. A customer's language is
searched first in finance ops' folder, then in the shipped one, then English: a file missing in
a language falls back to the English file, and `dunwise templates check` reports it.
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "messages"
DEFAULT_LANGUAGE = "en"
LANGUAGE_FOLDER = re.compile(r"^[a-z]{2,3}$")
WORDS_FILE = "_words.txt"  # the words the shared layouts use, one file per language
EMAIL_PARTS = ("subject.txt", "txt", "html")
SMS_PARTS = ("sms.txt",)


def _roots() -> tuple[Path, ...]:
    from settings import get_settings

    own = get_settings().templates_dir
    return (own, TEMPLATE_DIR) if own is not None else (TEMPLATE_DIR,)


def template_folders(language: str = DEFAULT_LANGUAGE) -> tuple[Path, ...]:
    """The folders searched for a template file: the language's first, finance ops' own
    before the shipped ones, English last."""
    roots = _roots()
    if language == DEFAULT_LANGUAGE:
        return roots
    return tuple(root / language for root in roots) + roots


def template_file(name: str, language: str = DEFAULT_LANGUAGE) -> Path | None:
    """The file a template name's part comes from (NAME.txt, ...), or None."""
    for folder in template_folders(language):
        if (folder / name).is_file():
            return folder / name
    return None


def languages() -> list[str]:
    """English, then every language with a folder of translations, shipped or finance ops'."""
    found = {
        folder.name
        for root in _roots()
        if root.is_dir()
        for folder in root.iterdir()
        if folder.is_dir() and LANGUAGE_FOLDER.match(folder.name)
    }
    return [DEFAULT_LANGUAGE, *sorted(found - {DEFAULT_LANGUAGE})]


def english_files() -> list[str]:
    """What a language translates: every English template file, and the words of the shared
    layouts (`_words.txt`); the layouts and building blocks themselves serve every language."""
    return sorted(
        {
            path.name
            for root in _roots()
            for path in root.glob("*.*")
            if path.is_file() and (not path.name.startswith("_") or path.name == WORDS_FILE)
        }
    )


def untranslated(language: str) -> list[str]:
    """The English files a language has no file for, so they fall back to English."""
    folders = [root / language for root in _roots()]
    return [name for name in english_files() if not any((f / name).is_file() for f in folders)]


def available_templates() -> set[str]:
    """Template names that have every file for both channels."""
    names = {
        path.name.split(".", 1)[0] for folder in template_folders() for path in folder.glob("*.*")
    }
    return {name for name in names if is_template(name)}


def is_template(name: str) -> bool:
    """Whether `name` is a template, not a shared layout, with every file for both channels."""
    return not name.startswith("_") and all(
        template_file(f"{name}.{part}") for part in EMAIL_PARTS + SMS_PARTS
    )
