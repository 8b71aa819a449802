"""Loopback parts for the portal's unit tests: fresh 127.x subnets and a scripted agent.

``ScriptedAgent`` is a real aiohttp server on a loopback address, in a thread, that
checks every request with the real ``nodeagent.protocol.verify_request`` (a bad
signature gets the agent's own 401) and answers from a script. It is for tests whose
point is how the portal handles one particular reply (a 5xx, a malformed body); anything
else talks to real agents (``hapairs.tests.e2e.AgentFarm``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nodeagent import protocol, tlsid

# per process, so two suites running at once on one machine do not collide
_counter = itertools.count(os.getpid() % 200)
# the pytest-xdist worker this process is (make test runs two): each picks subnets of its own
XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
XDIST_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def third_octet(counter: Iterator[int], low: int = 10, count: int = 200) -> int:
    """The next of ``count`` octets from ``low`` that only this xdist worker uses (those equal
    to its index modulo the number of workers): two workers never pick the same subnet."""
    share = count // XDIST_WORKERS
    return low + (next(counter) % share) * XDIST_WORKERS + XDIST_WORKER


def port_free(host: str, port: int) -> bool:
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def fresh_subnet(second_octet: int, port: int) -> str:
    """``127.<second_octet>.N`` where nothing listens on .1-.9 at ``port``: no agent of an
    earlier test (or of another suite) can answer there."""
    for _ in range(200):
        net = f"127.{second_octet}.{third_octet(_counter, low=20)}"
        if all(port_free(f"{net}.{i}", port) for i in range(1, 10)):
            return net
    raise RuntimeError(f"no free loopback subnet in 127.{second_octet}.0.0/16")


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)  # JSON-serialisable, or bytes sent as they are
    delay: float = 0.0  # seconds before answering
    headers: dict[str, str] = field(default_factory=dict)  # more response headers (a Location, say)


@dataclass
class Seen:
    method: str
    path_qs: str
    body: bytes
    idempotency_key: str | None
    signature_error: str | None  # None: verify_request accepted it
    protocol_version: str | None  # what the portal said it speaks


CURRENT_VERSION = str(protocol.PROTOCOL_VERSION)  # what a current agent says on every answer


class ScriptedAgent:
    """``replies[(METHOD, path)]``: the replies in order (the last one repeats).
    ``protocol_version``: what it says it speaks on every answer (default: the current one)."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        replies: dict[tuple[str, str], list[Reply]],
        *,
        protocol_version: str | None = CURRENT_VERSION,
    ):
        self.host, self.port, self.password = host, port, password
        self.protocol_version = protocol_version
        self.replies = {key: list(value) for key, value in replies.items()}
        self.seen: list[Seen] = []
        self._replay = protocol.ReplayCache()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        # its own TLS key and certificate, as a real agent makes at its first start
        self.identity = tlsid.ensure(
            Path(tempfile.mkdtemp(prefix="scripted-agent-")), name="scripted", addresses=[host]
        )
        self.fingerprint = self.identity.fingerprint

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            protocol.verify_request(
                self.password, request.method, request.path_qs, body, request.headers, replay_cache=self._replay
            )
            error = None
        except protocol.SignatureError as exc:
            error = str(exc)
        self.seen.append(
            Seen(
                request.method,
                request.path_qs,
                body,
                request.headers.get(protocol.IDEMPOTENCY_HEADER),
                error,
                request.headers.get(protocol.HEADER_PROTOCOL),
            )
        )
        headers = {protocol.HEADER_PROTOCOL: self.protocol_version} if self.protocol_version else {}
        if error is not None:
            return web.json_response({"error": error}, status=401, headers=headers)
        script = self.replies.get((request.method, request.path))
        if not script:
            return web.json_response(
                {"error": f"no route {request.method} {request.path}"}, status=404, headers=headers
            )
        reply = script.pop(0) if len(script) > 1 else script[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        return web.Response(
            body=raw, status=reply.status, content_type="application/json", headers={**headers, **reply.headers}
        )

    def start(self) -> ScriptedAgent:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                app = web.Application()
                app.router.add_route("*", "/{tail:.*}", self._handle)
                self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
                loop.run_until_complete(self._runner.setup())
                loop.run_until_complete(
                    web.TCPSite(
                        self._runner,
                        self.host,
                        self.port,
                        reuse_address=True,
                        ssl_context=self.identity.server_context(),
                    ).start()
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"scripted-agent-{self.host}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
