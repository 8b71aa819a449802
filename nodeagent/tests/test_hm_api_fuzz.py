"""The HM API under hostile requests, on every mutating route: unsigned, wrongly signed,
stale, from the future, replayed, truncated after signing, over the size limit, and signed
bodies that are no JSON object (garbage bytes, other JSON values, JSON nested past the
parser's depth, numbers past Python's digit limit, lone surrogates). Every refusal is a
4xx with a JSON error, never a 5xx, and the node's state (its state directory, file by
file, and what it holds in memory) is the same before and after, read both times.

Before this test, deeply nested JSON (RecursionError) and a 5,000-digit number
(ValueError) in a signed body were 500s: take ``RecursionError`` / ``ValueError`` out of
``nodeagent.server._json`` and it fails. (The same nesting in a heartbeat datagram, read
before its signature is checked, escaped ``datagram.parse``: test_heartbeat_datagrams.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time

from nodeagent import protocol as P

from .test_server import running

MUTATING = [
    ("POST", P.PATH_HA_CONFIGURE),
    ("DELETE", P.PATH_HA_PEER.format(peer_hm_ip="127.0.0.9")),
    ("POST", P.PATH_FAILOVER),
    ("POST", P.PATH_FAILBACK),
    ("POST", P.PATH_LICENSES),
    ("DELETE", P.PATH_LICENSE.format(license_id="0123456789abcdef")),
    ("DELETE", P.PATH_SERVICE_ASSIGNMENTS),
    ("POST", P.PATH_SERVICES_STOP),
    ("POST", P.PATH_SERVICES_START),
    ("PUT", P.PATH_TRAP_DESTINATIONS),
    ("POST", P.PATH_PEER_COMMAND),
    ("POST", P.PATH_PEER_REPLICATE),
    ("POST", P.PATH_PEER_SNAPSHOT),
]
PASSWORD = "pw-prim"


def garbage_bodies(rng: random.Random) -> list[bytes]:
    """Signed bodies that are not a JSON object: the server must refuse each with a 4xx."""
    return [
        b"{",
        b'{"a": 1',
        b"\xff\xfe\x00",
        rng.randbytes(300),
        b"[]",
        b"7",
        b'"text"',
        b"null",
        b"true",
        b"[" * 100_000 + b"]" * 100_000,  # past the parser's depth
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
        b'{"n": ' + b"9" * 5000 + b"}",  # past Python's 4,300-digit limit for int()
        b'"\\ud800"',  # a lone surrogate
        b"NaN",
        b"\x00" * 64,
    ]


def snapshot(node) -> tuple:
    files = {}
    for path in sorted(node.sd.root.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(node.sd.root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    memory = (
        node.services_running,
        node.seq,
        json.dumps(node.assignments, sort_keys=True),
        json.dumps([{k: v for k, v in lic.items()} for lic in node.licenses], sort_keys=True),
        sorted(node.pairs),
    )
    return files, memory


def test_every_hostile_request_to_a_mutating_route_is_a_4xx_and_changes_nothing(tmp_path):
    rng = random.Random(20261202)

    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            node = nodes["prim"]
            node.assignments = [{"service": "wIPS", "element": "Campus"}]
            base_url = f"https://{node.cfg.hm_ip}:{P.DEFAULT_PORT}"
            refusals = 0

            async def send(method, path, body, headers, expect=None, *, parser=False):
                nonlocal refusals
                async with session.request(method, base_url + path, data=body, headers=headers) as r:
                    text = await r.text()
                    what = (method, path, r.status, text[:300], body[:60])
                    assert 400 <= r.status < 500, what
                    if not parser:  # (the HTTP parser's own refusals, before the application, are text)
                        assert r.content_type == "application/json" and "error" in json.loads(text), what
                    if expect is not None:
                        assert r.status == expect, (method, path, r.status, text[:300])
                refusals += 1

            def signed(method, path, body, **kw):
                return {
                    **P.sign_request(PASSWORD, method, path, body, **kw),
                    P.HEADER_PROTOCOL: str(P.PROTOCOL_VERSION),
                    P.IDEMPOTENCY_HEADER: f"fuzz-{rng.random()}",
                    "Content-Type": "application/json",
                }

            before = snapshot(node)
            for method, path in MUTATING:
                body = b'{"reason": "fuzz"}'
                plain = {P.IDEMPOTENCY_HEADER: "k", "Content-Type": "application/json"}
                await send(method, path, body, plain, 401)  # unsigned
                await send(method, path, body, {**plain, **P.sign_request("wrong", method, path, body)}, 401)
                now = int(time.time())
                await send(method, path, body, signed(method, path, body, timestamp=now - 3600), 401)  # stale
                await send(method, path, body, signed(method, path, body, timestamp=now + 3600), 401)  # future
                cut = signed(method, path, body)
                await send(method, path, body[: len(body) // 2], cut, 401)  # truncated after signing
                bogus = {**signed(method, path, body), "X-MSE-Signature": "zz" * 500}
                await send(method, path, body, bogus, 401)  # a junk signature
                bogus = {**signed(method, path, body), "X-MSE-Signature": "zz" * 5000}
                await send(method, path, body, bogus, parser=True)  # a header past the parser's limit
                huge = b'{"x": "' + b"a" * (9 * 1024 * 1024) + b'"}'
                await send(method, path, huge, signed(method, path, huge))  # over the size limit
                for junk in garbage_bodies(rng):
                    headers = signed(method, path, junk)
                    await send(method, path, junk, headers)
                    await send(method, path, junk, headers, 401)  # the same request again: a replay
                no_key = {k: v for k, v in signed(method, path, body).items() if k != P.IDEMPOTENCY_HEADER}
                peer = path.startswith(f"{P.PREFIX}/peer/")  # peers' messages carry no Idempotency-Key
                await send(method, path, body, no_key, None if peer else 400)  # an operator's, without one
                old = {**signed(method, path, body), P.HEADER_PROTOCOL: "1"}
                await send(method, path, body, old, 400)  # a protocol this agent does not speak
            after = snapshot(node)
            assert after == before
            assert refusals == len(MUTATING) * (10 + 2 * len(garbage_bodies(rng)))
            # and the node still works: a signed, well-formed request is answered
            status, out = await clients["prim"].request("DELETE", P.PATH_SERVICE_ASSIGNMENTS, idempotency_key="ok-1")
            assert (status, out) == (200, {"deleted": 1})

    asyncio.run(go())
