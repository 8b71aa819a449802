"""The embedded default's mail: Django's file backend writes every message it "sends" to
``var/mail/`` (``EMAIL_FILE_PATH``), one file per connection, messages separated by a
line of 79 dashes. This reads them back for the Reports page's mailbox, so a newcomer
running ``make run`` can open the reports and alerts the portal sent."""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.utils import parsedate_to_datetime
from pathlib import Path

from django.conf import settings

FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
SEPARATOR = b"\n" + b"-" * 79 + b"\n"
FILE_NAME = re.compile(r"^[\w.-]+\.log$")
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class MailboxMessage:
    file: str
    index: int
    subject: str
    sender: str
    to: str
    date: datetime | None
    text: str
    html: str
    message_id: str
    delivery_key: str


def available() -> bool:
    return settings.EMAIL_BACKEND == FILE_BACKEND


def folder() -> Path:
    return Path(settings.EMAIL_FILE_PATH)


def _files() -> list[Path]:
    try:
        entries = [path for path in folder().iterdir() if FILE_NAME.match(path.name) and path.is_file()]
    except OSError:
        return []
    return sorted(entries, key=lambda path: (path.stat().st_mtime, path.name), reverse=True)


def _parse(path: Path) -> list[MailboxMessage]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        raw = path.read_bytes()
    except OSError:
        return []
    found = []
    for index, chunk in enumerate(part for part in raw.split(SEPARATOR) if part.strip()):
        message = email.message_from_bytes(chunk, policy=policy.default)
        text_part = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
        try:
            date = parsedate_to_datetime(message["Date"]) if message["Date"] else None
        except (TypeError, ValueError):
            date = None
        found.append(
            MailboxMessage(
                file=path.name,
                index=index,
                subject=str(message["Subject"] or ""),
                sender=str(message["From"] or ""),
                to=str(message["To"] or ""),
                date=date,
                text=text_part.get_content() if text_part is not None else "",
                html=html_part.get_content() if html_part is not None else "",
                message_id=str(message["Message-ID"] or ""),
                delivery_key=str(message["X-Mseportal-Delivery"] or ""),
            )
        )
    return found


def messages(*, limit: int = 100) -> list[MailboxMessage]:
    """The newest messages first (at most ``limit``)."""
    found: list[MailboxMessage] = []
    for path in _files():
        found.extend(reversed(_parse(path)))
        if len(found) >= limit:
            break
    return found[:limit]


def message(file: str, index: int) -> MailboxMessage | None:
    """One message by file name and position; names are matched, never joined as paths."""
    if not FILE_NAME.match(file):
        return None
    path = next((p for p in _files() if p.name == file), None)
    if path is None:
        return None
    parsed = _parse(path)
    return parsed[index] if 0 <= index < len(parsed) else None
