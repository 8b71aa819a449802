"""A small signed HTTPS client for the agent API (used by peers, the CLI and tests).

The HM port speaks TLS only (nodeagent.tlsport). With ``fingerprint`` the connection is to
exactly that certificate (aiohttp checks it after the handshake, and a different one raises
``aiohttp.ServerFingerprintMismatch``); without, it is encrypted but not authenticated,
which only an operator's first contact or a test should do. ``tls=False`` is for the
witnesses' API, which carries no secret (every request is signed, none holds a password)."""

from __future__ import annotations

import json
import ssl
from functools import lru_cache
from typing import Any

import aiohttp

from . import tlsid
from .protocol import (
    DEFAULT_PORT,
    HEADER_PROTOCOL,
    IDEMPOTENCY_HEADER,
    PREFIX,
    PROTOCOL_VERSION,
    ProtocolMismatch,
    check_version,
    new_idempotency_key,
    sign_request,
)

VERSION_REFUSED = 400  # the status a version mismatch is reported with (the answer is not read)
# an agent's idle connection to its peer is closed after this long: a pair's traffic is
# bursts (hello, sync, commands) and a busy primary's replication, which keeps its own open;
# each idle TLS connection costs tens of KB on both sides, thousands in a farm
PEER_KEEPALIVE = 3.0


class AgentError(Exception):
    def __init__(self, status: int, data: Any) -> None:
        self.status = status
        self.data = data
        msg = data.get("error") if isinstance(data, dict) else str(data)
        super().__init__(f"HTTP {status}: {msg}")


@lru_cache(maxsize=1)
def _unpinned() -> ssl.SSLContext:
    return tlsid.client_context()


class AgentClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        host: str,
        password: str,
        *,
        port: int = DEFAULT_PORT,
        timeout: float = 5.0,
        fingerprint: str | None = None,
        tls: bool = True,
    ) -> None:
        self.session = session
        self.base = f"{'https' if tls else 'http'}://{host}:{port}"
        self.password = password
        self.timeout = timeout
        self.ssl: aiohttp.Fingerprint | ssl.SSLContext | bool = (
            (tlsid.pin(fingerprint) if fingerprint else _unpinned()) if tls else True
        )

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        auto_key: bool = True,
    ) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = sign_request(self.password, method, path, data)
        headers[HEADER_PROTOCOL] = str(PROTOCOL_VERSION)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if method.upper() != "GET" and (idempotency_key or auto_key):
            headers[IDEMPOTENCY_HEADER] = idempotency_key or new_idempotency_key()
        async with self.session.request(
            method,
            self.base + path,
            data=data or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ssl=self.ssl,
        ) as resp:
            raw = await resp.read()
            try:  # an HM API of another protocol version: its answer is not ours to read
                if path.startswith(PREFIX + "/"):
                    check_version(resp.headers.get(HEADER_PROTOCOL), who=f"{self.base}")
            except ProtocolMismatch as e:
                return VERSION_REFUSED, {"error": str(e)}
            try:
                out = json.loads(raw) if raw else None
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
                out = raw.decode(errors="replace")
            return resp.status, out

    async def call(self, method: str, path: str, body: Any = None, **kw) -> Any:
        status, out = await self.request(method, path, body, **kw)
        if status >= 300:
            raise AgentError(status, out)
        return out
