"""The one HTTP client the portal uses to talk to node agents.

Async at its core (aiohttp: the fleet poller talks to thousands of agents at once);
``call()`` runs a single request from synchronous code (Celery tasks, services).

* Every request goes over TLS to the certificate pinned for the appliance (its fingerprint,
  ``AgentTarget.fingerprint``, taken when it was added: trust on first use, as SSH does); a
  different certificate is ``AgentCertificateChanged`` before anything is sent. Only a target
  with no pin yet (the add's first contact) connects unauthenticated, and ``call_seen`` then
  says which certificate it saw.
* Every request is signed (``nodeagent.protocol``) with the appliance's password.
* Every call has a timeout.
* Errors become exactly three exceptions: ``AgentUnavailable`` (transport failure,
  timeout, 5xx: retryable), ``AgentRejected`` (4xx: the agent's own message, shown to
  the operator; ``AgentClockRefused`` when its clock is too far from the portal's to
  accept the signature), ``AgentBadReply`` (an answer that is not what the protocol says).
* Every answer says the agent's clock (``X-MSE-Time``): ``Answer.clock_offset``, and
  ``AgentError.clock_offset`` on a refusal.
* Only registered appliances' addresses inside ``AGENT_ALLOWED_NETWORKS`` are called:
  the portal cannot be made to send requests anywhere else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import aiohttp
from django.conf import settings

from nodeagent import protocol, tlsid


class AgentError(Exception):
    """Base: ``message`` is safe to show an operator (never holds a password)."""

    def __init__(self, message: str, *, status: int | None = None, clock_offset: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.clock_offset = clock_offset  # the agent's clock minus the portal's (s), if it answered


class AgentUnavailable(AgentError):
    """The agent could not be reached or failed on its side (retryable)."""


class AgentRejected(AgentError):
    """The agent refused the request (4xx); retrying the same request will not help."""


class AgentClockRefused(AgentRejected):
    """The agent refused a request signed too far from its own clock: a clock to set (NTP), not a password."""


class AgentBadReply(AgentError):
    """The agent answered something the protocol does not allow."""


class AgentCertificateChanged(AgentRejected):
    """The agent presented another certificate than the pinned one; nothing was sent."""

    def __init__(self, name: str, host: str, *, expected: str, got: str):
        super().__init__(
            f"{name} ({host}) presented a different TLS certificate (fingerprint {got}) from the one pinned"
            f" when it was added ({expected}). Nothing was sent to it. If its certificate was replaced on"
            " purpose, an Admin can trust the new one on its Mobility Services Engine page."
        )
        self.name, self.host, self.expected, self.got = name, host, expected, got


@dataclass(frozen=True)
class AgentTarget:
    """Where and how to reach one agent. Built from an Appliance by ``target_for``."""

    name: str
    host: str
    password: str
    port: int = protocol.DEFAULT_PORT
    fingerprint: str | None = None  # the pinned certificate (None: first contact, unauthenticated)

    def __repr__(self) -> str:  # never print the password
        return f"AgentTarget({self.name!r}, {self.host}:{self.port})"


def target_for(appliance, *, password: str | None = None) -> AgentTarget:
    return AgentTarget(
        name=appliance.name,
        host=appliance.hm_ip,
        password=password if password is not None else appliance.get_password(),
        port=settings.AGENT_PORT,
        fingerprint=appliance.tls_fingerprint or None,
    )


@dataclass(frozen=True)
class Answer:
    """An agent's answer: its JSON object, the certificate it came over, and how far the
    agent's clock is from the portal's (seconds, positive: ahead; None: it did not say). The
    offset is the agent's stamp minus the middle of the request's round trip, so it is off by
    at most half the round trip (a millisecond or so on a kept connection)."""

    data: dict[str, Any]
    seen: str | None
    clock_offset: float | None = None


# a round trip longer than this (a busy poller's queue, a slow link) says too little of the
# agent's clock: the estimate is off by up to half of it, so it is not taken
CLOCK_ROUND_TRIP_MAX = 0.5


def clock_offset_of(headers, sent: float, received: float) -> float | None:
    """The agent's clock minus the portal's, from its answer's time header (None: absent, not
    a time, or a round trip too long to say)."""
    if received - sent > CLOCK_ROUND_TRIP_MAX:
        return None
    try:
        stamp = float(headers.get(protocol.HEADER_TIME, ""))
    except ValueError:
        return None
    return stamp - (sent + received) / 2 if math.isfinite(stamp) else None


def describe_offset(seconds: float) -> str:
    """'412 s ahead of', '3.2 s behind', 'the same as' the portal's clock."""
    magnitude = abs(seconds)
    if magnitude < 0.05:
        return "the same as"
    figure = f"{magnitude:.1f}" if magnitude < 10 else f"{magnitude:.0f}"
    return f"{figure} s {'ahead of' if seconds > 0 else 'behind'}"


class _FirstContact(aiohttp.Fingerprint):
    """No pin yet: connect to whatever certificate the agent presents, and note which.
    (aiohttp hands a ``Fingerprint`` the new connection's transport to check.)"""

    def __init__(self) -> None:
        super().__init__(bytes(32))
        self.seen: str | None = None

    def check(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.seen = tlsid.fingerprint_of(der) if der else None


@lru_cache(maxsize=8)
def _networks(configured: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(net) for net in configured]


def check_address(host: str) -> None:
    """Refuse any address outside the configured agent networks."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise AgentRejected(f"{host!r} is not an IP address.") from None
    networks = _networks(tuple(settings.AGENT_ALLOWED_NETWORKS))  # parsed once, not per request
    if not any(address in network for network in networks):
        allowed = ", ".join(str(n) for n in networks)
        raise AgentRejected(f"{host} is outside the networks the portal may call ({allowed}).")


class AgentClient:
    """One aiohttp session for many requests. Use as ``async with AgentClient() as c``.

    ``connector``: a connection pool that outlives this client (the poller's, kept per
    process so its TLS connections are reused round after round); it is left open."""

    def __init__(
        self, *, timeout: float | None = None, limit: int = 200, connector: aiohttp.BaseConnector | None = None
    ):
        self.timeout = aiohttp.ClientTimeout(total=timeout or settings.AGENT_TIMEOUT)
        self.limit = limit
        self._connector = connector
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentClient:
        if self._connector is not None:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, connector=self._connector, connector_owner=False
            )
        else:
            connector = aiohttp.TCPConnector(limit=self.limit, force_close=False)
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=connector)
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        target: AgentTarget,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send one signed request; return the decoded JSON object or raise an AgentError."""
        return (await self.request_seen(target, method, path, body=body, idempotency_key=idempotency_key))[0]

    async def request_seen(
        self,
        target: AgentTarget,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        """:meth:`request`, and the fingerprint of the certificate the agent presented."""
        answer = await self.request_answer(target, method, path, body=body, idempotency_key=idempotency_key)
        return answer.data, answer.seen

    async def request_answer(
        self,
        target: AgentTarget,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Answer:
        """:meth:`request`, with the certificate it came over and the agent's clock offset."""
        assert self._session is not None, "use AgentClient as an async context manager"
        check_address(target.host)
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = protocol.sign_request(target.password, method, path, payload)
        headers[protocol.HEADER_PROTOCOL] = str(protocol.PROTOCOL_VERSION)
        if payload:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers[protocol.IDEMPOTENCY_HEADER] = idempotency_key
        url = f"https://{target.host}:{target.port}{path}"
        pin = tlsid.pin(target.fingerprint) if target.fingerprint else _FirstContact()
        try:
            sent = time.time()
            # never follow a redirect: it would send the signed request where check_address never looked
            async with self._session.request(
                method, url, data=payload or None, headers=headers, allow_redirects=False, ssl=pin
            ) as response:
                raw = await response.read()
                status = response.status
                theirs = response.headers.get(protocol.HEADER_PROTOCOL)
                offset = clock_offset_of(response.headers, sent, time.time())
        except aiohttp.ServerFingerprintMismatch as exc:
            got = ":".join(f"{b:02X}" for b in exc.got)
            raise AgentCertificateChanged(
                target.name, target.host, expected=tlsid.normalise(target.fingerprint or ""), got=got
            ) from None
        except TimeoutError:
            raise AgentUnavailable(
                f"{target.name} ({target.host}) did not answer within {self.timeout.total:g} s."
            ) from None
        except aiohttp.ClientConnectorError:
            raise AgentUnavailable(f"{target.name} ({target.host}) refused the connection or is unreachable.") from None
        except aiohttp.ClientError as exc:
            raise AgentUnavailable(f"{target.name} ({target.host}): {type(exc).__name__}.") from None
        data = _decode(raw)
        try:  # an agent of another protocol version: refused, whatever it answered
            protocol.check_version(theirs, who=f"{target.name} ({target.host})")
        except protocol.ProtocolMismatch as exc:
            raise AgentRejected(str(exc), status=status) from None
        if status >= 500:
            raise AgentUnavailable(
                f"{target.name} failed on its side: {_reason(data, status)}", status=status, clock_offset=offset
            )
        if status == 401 and _reason(data, status).startswith("stale request"):
            raise AgentClockRefused(_clock_refusal(target, offset, _reason(data, status)), status=status,
                                    clock_offset=offset)  # fmt: skip
        if status == 401:
            raise AgentRejected(
                f"{target.name} refused the credentials: check the appliance's password.",
                status=status,
                clock_offset=offset,
            )
        if status >= 400:
            raise AgentRejected(f"{target.name}: {_reason(data, status)}", status=status, clock_offset=offset)
        if 300 <= status < 400:
            raise AgentBadReply(
                f"{target.name} answered with a redirect (HTTP {status}); it was not followed.", status=status
            )
        if not isinstance(data, dict):
            raise AgentBadReply(f"{target.name} answered with something that is not a JSON object.", status=status)
        return Answer(data, pin.seen if isinstance(pin, _FirstContact) else target.fingerprint, offset)


def _clock_refusal(target: AgentTarget, offset: float | None, reason: str) -> str:
    """The agent refused a request signed too far from its clock: a clock to set, not a password."""
    apart = f"its clock is {describe_offset(offset)} the portal's" if offset is not None else f"it says: {reason}"
    who = target.host if target.name == target.host else f"{target.name} ({target.host})"
    return (
        f"{who} refused the request as signed at the wrong time: {apart}. Appliances "
        f"accept a signed request within {protocol.DEFAULT_FRESHNESS_SECONDS} s of their own clock. Set the "
        "portal and every appliance to the same NTP servers (the appliance's setup asks for them), then try again."
    )


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


def _reason(data: Any, status: int) -> str:
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:500]
    return f"HTTP {status}"


def call(
    target: AgentTarget,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """One request from synchronous code."""
    return call_seen(target, method, path, body=body, idempotency_key=idempotency_key, timeout=timeout)[0]


def call_seen(
    target: AgentTarget,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> tuple[dict[str, Any], str | None]:
    """One request from synchronous code, and the fingerprint of the certificate it was made to."""
    answer = call_answer(target, method, path, body=body, idempotency_key=idempotency_key, timeout=timeout)
    return answer.data, answer.seen


def call_answer(
    target: AgentTarget,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Answer:
    """One request from synchronous code: the answer, its certificate and the agent's clock offset."""

    async def run() -> Answer:
        async with AgentClient(timeout=timeout, limit=1) as client:
            return await client.request_answer(target, method, path, body=body, idempotency_key=idempotency_key)

    return asyncio.run(run())
