"""The heartbeat datagram: its wire format, its signature and its freshness (stdlib only).

A pair's heartbeats are UDP datagrams on the Health Monitor port (8001/udp), on every path
the pair has (the HM network, the direct-connect link), as VRRP and corosync send theirs.
The secondary sends one each heartbeat interval; the primary answers each fresh one at once
with its own (an *ack*, echoing the heartbeat's sequence number, so the secondary measures
the response time). Commands, replication and snapshots stay on the HTTPS peer API.

Wire format::

    MAGIC (4 bytes, b"MHB4")  TAG (32 bytes)  BODY (compact JSON, UTF-8)

``TAG`` is HMAC-SHA256 over ``MAGIC + BODY``, keyed by the **sender's heartbeat key**: 32
random bytes each node draws when it starts (with a random ``boot`` id) and gives its peer
over the pinned TLS peer API (the ``hello`` peer command; every peer message carries it).
The key is never on the wire in cleartext and never derived from a password, so a captured
datagram gives no password to guess offline.

``BODY`` holds ``kind`` (``hb`` or ``ack``), ``from`` and ``to`` (HM IPs), ``path``,
``boot``, ``seq`` (one counter per node and boot, increasing by one per datagram sent),
``echo`` (an ack: the heartbeat's ``seq``), and the sender's side of the pair: ``view``
(state, generation, owner, ...), ``digest``, ``slot``, ``mean_ms``.

A receiver (:class:`PeerKey`) accepts a datagram only if it is well formed, addressed to it,
signed with the key its peer announced for that boot, and its ``seq`` is above every one it
accepted of that boot: a replay, a stale or reordered datagram, a datagram of an earlier
boot (its key is forgotten) and a forged one are refused, counted, and change nothing.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"MHB4"
TAG_BYTES = 32
MAX_DATAGRAM = 2048  # a heartbeat is ~400 bytes; anything larger is refused unread
KINDS = ("hb", "ack")
KEY_BYTES = 32


class DatagramError(ValueError):
    """A datagram refused; the message says why (counted, rate-limited in the log)."""


def new_key() -> tuple[str, bytes]:
    """A node's (boot id, heartbeat key) for one run."""
    return secrets.token_hex(8), secrets.token_bytes(KEY_BYTES)


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one, not one per datagram (json.dumps with options)


def encode(key: bytes, body: dict[str, Any]) -> bytes:
    raw = _ENCODER.encode(body).encode()
    return MAGIC + hmac.digest(key, MAGIC + raw, "sha256") + raw


def head_of(fixed: dict[str, Any]) -> bytes:
    """The opening of a body: ``fixed`` (the members that stay the same from one datagram to
    the next) as a JSON object left open after a comma, for :func:`encode_with`. A sender
    encodes it once per change of its side, not once per datagram."""
    if not fixed:
        raise ValueError("a body has fixed members")
    return _ENCODER.encode(fixed).encode()[:-1] + b","


def _number(value: int | float | None) -> bytes:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return b"null"
    return b"%d" % value if isinstance(value, int) else repr(float(value)).encode()


def encode_with(key: bytes, head: bytes, seq: int, echo: int | None, mean_ms: float | None) -> bytes:
    """A datagram whose body is ``head`` (:func:`head_of`) closed with the members that change
    with every datagram: the same JSON object :func:`encode` would make, in another order."""
    raw = head + b'"seq":%d,"echo":%s,"mean_ms":%s}' % (seq, _number(echo), _number(mean_ms))
    return MAGIC + hmac.digest(key, MAGIC + raw, "sha256") + raw


HEADER = len(MAGIC) + TAG_BYTES
# the members encode_with closes a body with, as it writes them
_TAIL = re.compile(rb'"seq":(\d{1,19}),"echo":(null|\d{1,19}),"mean_ms":(null|-?\d+(?:\.\d+)?(?:e[-+]\d+)?)\}')


def split(data: bytes) -> tuple[bytes, int, int | None, float | None] | None:
    """(head, seq, echo, mean_ms) of a datagram whose body ends as :func:`encode_with` ends
    it, or None (any other body, or not a datagram): ``head`` is the body's opening, the
    fixed members (:func:`head_of`). Unverified. A receiver that has parsed and accepted a
    datagram with the same head knows the rest of the body without parsing it again."""
    if len(data) > MAX_DATAGRAM or not data.startswith(MAGIC):
        return None
    at = data.rfind(b'"seq":')
    if at < HEADER + 2 or data[HEADER] != 0x7B or data[at - 1] != 0x2C:  # a head is "{...,"
        return None
    tail = _TAIL.fullmatch(data, at)
    if tail is None:
        return None
    seq, echo, mean_ms = tail.groups()
    return (
        data[HEADER:at],
        int(seq),
        None if echo == b"null" else int(echo),
        None if mean_ms == b"null" else float(mean_ms),
    )


def parse(data: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    """(tag, raw body, body) of a datagram, unverified: the receiver picks the key by ``from``
    and ``boot``, then calls :func:`verify`. DatagramError when it is not a heartbeat."""
    if len(data) > MAX_DATAGRAM:
        raise DatagramError(f"datagram too large: over {MAX_DATAGRAM} bytes")
    if len(data) < len(MAGIC) + TAG_BYTES + 2 or not data.startswith(MAGIC):
        raise DatagramError("not a protocol-4 heartbeat datagram")
    tag, raw = data[len(MAGIC) : len(MAGIC) + TAG_BYTES], data[len(MAGIC) + TAG_BYTES :]
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested past the parser's depth
        raise DatagramError("body is not JSON") from None
    if not isinstance(body, dict):
        raise DatagramError("body is not a JSON object")
    kind, seq, boot = body.get("kind"), body.get("seq"), body.get("boot")
    if kind not in KINDS:
        raise DatagramError(f"unknown kind {kind!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise DatagramError("seq is not a non-negative integer")
    if not isinstance(boot, str) or not 1 <= len(boot) <= 32:
        raise DatagramError("boot is not a short string")
    for name in ("from", "to", "path"):
        if not isinstance(body.get(name), str):
            raise DatagramError(f"{name} is missing")
    if not isinstance(body.get("view"), dict):
        raise DatagramError("view is missing")
    echo = body.get("echo")
    if echo is not None and (not isinstance(echo, int) or isinstance(echo, bool)):
        raise DatagramError("echo is not an integer")
    return tag, raw, body


def verify(key: bytes, tag: bytes, raw: bytes) -> bool:
    return hmac.compare_digest(tag, hmac.digest(key, MAGIC + raw, "sha256"))


@dataclass
class PeerKey:
    """What a node knows of its peer's heartbeats: the key announced for the peer's current
    boot (over TLS), and the highest sequence number accepted of that boot."""

    boot: str = ""
    key: bytes = b""
    last_seq: int = -1
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count

    def learn(self, announced: Any) -> bool:
        """The peer's ``{"boot", "key"}`` (a peer message, over TLS). True if it is new."""
        if not isinstance(announced, dict):
            return False
        boot, key = announced.get("boot"), announced.get("key")
        if not isinstance(boot, str) or not 1 <= len(boot) <= 32 or not isinstance(key, str):
            return False
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            return False
        if len(raw) != KEY_BYTES or (boot == self.boot and raw == self.key):
            return False
        self.boot, self.key, self.last_seq = boot, raw, -1
        return True

    def accept(self, tag: bytes, raw: bytes, body: dict[str, Any]) -> None:
        """Raise DatagramError unless the datagram is signed by the peer's current boot and
        newer than every one accepted; then remember its ``seq``."""
        self.admit(tag, raw, body["boot"], body["seq"])

    def admit(self, tag: bytes, raw: bytes, boot: str, seq: int) -> None:
        """:meth:`accept` of a datagram whose ``boot`` and ``seq`` are known."""
        if not self.key:
            raise self._refuse("unkeyed", "no heartbeat key from this peer yet (its hello is awaited)")
        if boot != self.boot:
            raise self._refuse("boot", f"boot {boot!r} is not the peer's current one")
        if not verify(self.key, tag, raw):
            raise self._refuse("signature", "bad signature")
        if seq <= self.last_seq:
            raise self._refuse("replay", f"seq {seq} is not above {self.last_seq} (replayed or stale)")
        self.last_seq = seq

    def _refuse(self, reason: str, message: str) -> DatagramError:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return DatagramError(message)
