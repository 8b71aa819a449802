"""Request signing for the wire (stdlib only): HMAC-SHA256 keyed by the *receiving* node's
admin password over ``METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nSHA256(body)``, verified with
a freshness window and a replay cache. ``nodeagent.protocol`` re-exports all of it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping

HEADER_TIMESTAMP = "X-MSE-Timestamp"
HEADER_NONCE = "X-MSE-Nonce"
HEADER_SIGNATURE = "X-MSE-Signature"
SIGNATURE_SCHEME = "v1"  # X-MSE-Signature: "v1=<hex>"
DEFAULT_FRESHNESS_SECONDS = 300


class SignatureError(Exception):
    """Request refused: unsigned, stale, replayed or bad signature (→ HTTP 401)."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body or b"").hexdigest()


def canonical_string(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return "\n".join([method.upper(), path, timestamp, nonce, body_digest(body)]).encode()


def compute_signature(password: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(password.encode(), canonical_string(method, path, timestamp, nonce, body), hashlib.sha256)
    return f"{SIGNATURE_SCHEME}={mac.hexdigest()}"


def sign_request(
    password: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers to add to a request. ``path`` includes the query string (``/x?a=1``)."""
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    n = nonce or secrets.token_hex(16)
    return {
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: n,
        HEADER_SIGNATURE: compute_signature(password, method, path, ts, n, body),
    }


class ReplayCache:
    """Remembers nonces until they can no longer pass the freshness check. Thread-safe."""

    __slots__ = ("_seen", "_max", "_lock")  # one per node: an agent farm holds thousands

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def check_and_add(self, nonce: str, expires_at: float, now: float) -> bool:
        """True if the nonce is new (and records it); False if it is a replay."""
        with self._lock:
            while self._seen:
                oldest, exp = next(iter(self._seen.items()))
                if exp < now or len(self._seen) >= self._max:
                    self._seen.popitem(last=False)
                else:
                    break
            if nonce in self._seen:
                return False
            self._seen[nonce] = expires_at
            return True

    def __len__(self) -> int:
        return len(self._seen)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:
        lower = name.lower()
        for k, val in headers.items():
            if k.lower() == lower:
                return val
    return v


def verify_request(
    password: str,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    replay_cache: ReplayCache | None,
    now: float | None = None,
    window: int = DEFAULT_FRESHNESS_SECONDS,
) -> None:
    """Raise SignatureError unless the request is signed with ``password``, fresh
    (|now - timestamp| <= window) and not seen before. The nonce is recorded only
    once everything else checks out, so a forged request cannot burn a nonce."""
    now = time.time() if now is None else now
    ts = _get(headers, HEADER_TIMESTAMP)
    nonce = _get(headers, HEADER_NONCE)
    sig = _get(headers, HEADER_SIGNATURE)
    if not ts or not nonce or not sig:
        raise SignatureError("unsigned request")
    if len(nonce) < 8 or len(nonce) > 128:
        raise SignatureError("bad nonce")
    try:
        ts_i = int(ts)
    except ValueError:
        raise SignatureError("bad timestamp") from None
    if abs(now - ts_i) > window:
        # what the caller needs to fix its clock, or this node's (the time is no secret: it is on every answer)
        raise SignatureError(
            f"stale request: signed {ts_i - now:+.0f} s off this node's clock (accepted within {window} s)"
        )
    expected = compute_signature(password, method, path, ts, nonce, body)
    if not hmac.compare_digest(expected.encode(), sig.strip().encode()):
        raise SignatureError("bad signature")
    if replay_cache is not None and not replay_cache.check_and_add(nonce, ts_i + window, now):
        raise SignatureError("replayed request")
