"""The Health Monitor port speaks TLS only, and says so to a plain-HTTP client.

:class:`TlsOnlySite` is an aiohttp site: it accepts each connection itself and peeks at its
first byte. A TLS ClientHello (0x16) goes to the HM application over TLS; anything else is
answered once, in plain HTTP, with ``400`` and a JSON error naming both protocol versions
(the one the client's ``X-MSE-Protocol`` header says, or "plain HTTP" when it says none,
and this agent's, over HTTPS), then closed. Nothing of the request is read past its headers
and nothing is executed: an old portal or peer gets a clear refusal, never a half-working
pair, and no body of the HM API ever travels in cleartext.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import ssl
from collections.abc import Callable
from contextlib import suppress

from aiohttp import web

from .protocol import HEADER_PROTOCOL, PROTOCOL_VERSION

log = logging.getLogger("nodeagent.tlsport")

TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a handshake (ClientHello)
PEEK_TIMEOUT = 10.0
HEADER_LIMIT = 8192
ACCEPT_BURST = 64  # connections accepted per wake-up of a listening socket
_VERSION_RE = re.compile(rb"^" + HEADER_PROTOCOL.encode() + rb":\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


def refusal_text(client_version: str | None) -> str:
    said = f"protocol {client_version}" if client_version else "no protocol version"
    return (
        f"This agent speaks protocol {PROTOCOL_VERSION} over HTTPS only; the request came in plain HTTP"
        f" ({said}). Upgrade the portal or peer to protocol {PROTOCOL_VERSION} and connect with https://."
    )


class _PlainRefusal(asyncio.Protocol):
    """Reads the request's headers (at most 8 KiB, for at most PEEK_TIMEOUT seconds), answers
    400 naming both versions, closes. The site keeps each one, to close it when it stops."""

    def __init__(self, live: set[asyncio.BaseTransport]) -> None:
        self.buf = b""
        self.live = live
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.live.add(transport)
        self.timer = asyncio.get_running_loop().call_later(PEEK_TIMEOUT, transport.close)  # a client that stalls

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.live.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf or b"\n\n" in self.buf or len(self.buf) >= HEADER_LIMIT:
            m = _VERSION_RE.search(self.buf.split(b"\r\n\r\n", 1)[0][:HEADER_LIMIT])
            version = m.group(1).decode(errors="replace")[:16] if m else None
            body = json.dumps({"error": refusal_text(version), "protocol": PROTOCOL_VERSION}).encode()
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                + f"{HEADER_PROTOCOL}: {PROTOCOL_VERSION}\r\nContent-Length: {len(body)}\r\n".encode()
                + b"Connection: close\r\n\r\n"
                + body
            )
            self.transport.close()


class _Listener:
    """A site's listening socket, accepted from by a reader callback of the loop (no task per
    socket: an agent farm listens on thousands), and what BaseSite.stop() closes: the socket,
    the connections still being peeked at, and the plain-HTTP ones still being refused (the HM
    application's own are the runner's to close)."""

    __slots__ = ("site", "sock", "loop", "routing", "refusing", "retry")

    def __init__(self, site: TlsOnlySite, sock: socket.socket) -> None:
        self.site, self.sock = site, sock
        self.loop = asyncio.get_running_loop()
        self.routing: set[asyncio.Task] | None = None  # made at the first connection
        self.refusing: set[asyncio.BaseTransport] | None = None  # made at the first plain-HTTP one
        self.retry: asyncio.TimerHandle | None = None
        self.loop.add_reader(sock.fileno(), self._acceptable)

    def _acceptable(self) -> None:
        for _ in range(ACCEPT_BURST):  # then the loop's other work; the rest at its next turn
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors for a moment: pause, then accept again
                log.warning("%s: accept failed: %s", self.site.name, e)
                self.loop.remove_reader(self.sock.fileno())
                self.retry = self.loop.call_later(0.1, self._resume)
                return
            if self.routing is None:
                self.routing = set()
            task = self.loop.create_task(self.site._route(conn))
            self.routing.add(task)
            task.add_done_callback(self.routing.discard)

    def _resume(self) -> None:
        self.retry = None
        if self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._acceptable)

    def close(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for task in list(self.routing or ()):
            task.cancel()
        for transport in list(self.refusing or ()):
            transport.close()


class TlsOnlySite(web.BaseSite):
    """``plain``: plain HTTP is served too, not refused (the service API on a VIP: its
    clients may use either; the HM port never does)."""

    __slots__ = ("_host", "_port", "_reuse_address", "_context_of", "_listener", "_plain")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext],
        backlog: int = 256,
        plain: bool = False,
    ) -> None:
        # a context, or a function giving it when a connection comes (an agent farm keeps no
        # context per node: each holds its certificate and key, ~20 KB; see tlsid.server_context)
        self._context_of = ssl_context if callable(ssl_context) else (lambda: ssl_context)
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self._listener: _Listener | None = None
        self._plain = plain

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(self._backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            self._runner._unreg_site(self)
            raise
        self._listener = _Listener(self, sock)
        self._server = self._listener  # type: ignore[assignment]
        # yield once, as aiohttp's TCPSite does (its create_server awaits): an agent farm
        # starts thousands of sites, its primaries' VIPs among them, and a start that never
        # yields starves the loop; the first hellos time out, and the retries never end
        # (measured: a 2,000-node farm never ready; with this yield, ready as before)
        await asyncio.sleep(0)

    async def _route(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        try:
            readable: asyncio.Future[None] = loop.create_future()

            def ready() -> None:
                if not readable.done():
                    readable.set_result(None)

            loop.add_reader(conn.fileno(), ready)
            try:
                await asyncio.wait_for(readable, PEEK_TIMEOUT)
            finally:
                loop.remove_reader(conn.fileno())
            first = conn.recv(1, socket.MSG_PEEK)
            if not first:
                conn.close()
                return
            server = self._runner.server
            if server is None:  # the runner is being cleaned up
                conn.close()
            elif first[0] == TLS_HANDSHAKE:
                context = self._context_of()
                await loop.connect_accepted_socket(server, conn, ssl=context, ssl_handshake_timeout=10)
            elif self._plain:
                await loop.connect_accepted_socket(server, conn)
            else:
                assert self._listener is not None
                if self._listener.refusing is None:
                    self._listener.refusing = set()
                refusing = self._listener.refusing
                await loop.connect_accepted_socket(lambda: _PlainRefusal(refusing), conn)
        except (OSError, ssl.SSLError, TimeoutError) as e:  # a client that went away, or a bad handshake
            log.debug("%s: connection dropped: %s", self.name, e)
            with suppress(OSError):
                conn.close()
        except BaseException:  # cancelled (the site stops) or anything unforeseen: never leak the socket
            with suppress(OSError):
                conn.close()
            raise
