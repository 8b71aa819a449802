"""Real servers on loopback for the report and alert tests: an SMTP server (aiosmtpd)
that can refuse the next few messages with a temporary error, and a webhook receiver.
Nothing here stands in for what is checked: the portal talks SMTP and HTTP to them."""

from __future__ import annotations

import email
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from hapairs.tests.ports import free_port
from mseportal.envconf import email_settings


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        """As a mail client shows it: Python's compat32 folding (Django 5.2's) starts a long
        non-ASCII subject on a continuation line, which the parser keeps as a leading space."""
        return str(self.message["Subject"]).strip()

    @property
    def text(self) -> str:
        return self.message.get_body(preferencelist=("plain",)).get_content()

    @property
    def html(self) -> str:
        return self.message.get_body(preferencelist=("html",)).get_content()


class Inbox:
    """An SMTP server on 127.0.0.1; ``refuse_next`` answers the next DATA commands 451."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.messages: list[Received] = []
        self.refuse_next = 0
        self.refused = 0
        self.controller: Controller | None = None

    def start(self) -> Inbox:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            return "451 4.3.0 Mail server busy, try again later"
        self.messages.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=email.message_from_bytes(envelope.original_content or envelope.content, policy=policy.default),
            )
        )
        return "250 2.0.0 Accepted"

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


def point_mail_at(settings, port: int) -> None:
    """Settings as ``EMAIL_URL=smtp://127.0.0.1:<port>`` makes them (through envconf)."""
    for name, value in email_settings(f"smtp://127.0.0.1:{port}?timeout=5", sink_dir=None).items():
        setattr(settings, name, value)


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A tiny HTTP server on 127.0.0.1 that records POSTs; ``statuses`` are answered in turn
    (then 204)."""

    def __init__(self, statuses: list[int] | None = None):
        self.posts: list[Post] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.posts.append(Post(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/mse"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
