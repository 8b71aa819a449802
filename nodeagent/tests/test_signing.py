"""Given/when/then tests of request signing, freshness and replay (nodeagent.signing, re-exported by nodeagent.protocol)."""

import pytest

from nodeagent import protocol as p


def headers_for(
    password="pw", method="POST", path="/hm/v1/ha/failover?x=1", body=b'{"a":1}', ts=1_000_000, nonce="n" * 16
):
    return p.sign_request(password, method, path, body, timestamp=ts, nonce=nonce)


def test_signed_request_verifies():
    h = headers_for()
    assert set(h) == {p.HEADER_TIMESTAMP, p.HEADER_NONCE, p.HEADER_SIGNATURE}
    assert h[p.HEADER_SIGNATURE].startswith("v1=")
    p.verify_request("pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', h, replay_cache=p.ReplayCache(), now=1_000_010)


def test_header_lookup_is_case_insensitive():
    h = {k.lower(): v for k, v in headers_for().items()}
    p.verify_request("pw", "post", "/hm/v1/ha/failover?x=1", b'{"a":1}', h, replay_cache=None, now=1_000_000)


@pytest.mark.parametrize(
    "change",
    [
        {"password": "other"},
        {"method": "GET"},
        {"path": "/hm/v1/ha/failover?x=2"},
        {"path": "/hm/v1/ha/failover"},
        {"body": b'{"a":2}'},
    ],
)
def test_any_change_breaks_the_signature(change):
    args = {"password": "pw", "method": "POST", "path": "/hm/v1/ha/failover?x=1", "body": b'{"a":1}'}
    h = headers_for()
    args.update(change)
    with pytest.raises(p.SignatureError, match="bad signature"):
        p.verify_request(
            args["password"], args["method"], args["path"], args["body"], h, replay_cache=p.ReplayCache(), now=1_000_000
        )


@pytest.mark.parametrize("missing", [p.HEADER_TIMESTAMP, p.HEADER_NONCE, p.HEADER_SIGNATURE])
def test_unsigned_request_is_refused(missing):
    h = headers_for()
    del h[missing]
    with pytest.raises(p.SignatureError, match="unsigned"):
        p.verify_request("pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', h, replay_cache=None, now=1_000_000)


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_stale_request_is_refused(skew):
    h = headers_for()
    with pytest.raises(p.SignatureError, match="stale"):
        p.verify_request("pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', h, replay_cache=None, now=1_000_000 + skew)


def test_window_edge_is_accepted():
    p.verify_request(
        "pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', headers_for(), replay_cache=None, now=1_000_300
    )


def test_replay_is_refused_but_a_new_nonce_passes():
    cache = p.ReplayCache()
    h = headers_for()
    p.verify_request("pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', h, replay_cache=cache, now=1_000_000)
    with pytest.raises(p.SignatureError, match="replayed"):
        p.verify_request("pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', h, replay_cache=cache, now=1_000_001)
    h2 = headers_for(nonce="m" * 16)
    p.verify_request("pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', h2, replay_cache=cache, now=1_000_001)


def test_forged_request_does_not_burn_the_nonce():
    cache = p.ReplayCache()
    forged = headers_for(password="wrong")
    with pytest.raises(p.SignatureError):
        p.verify_request("pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', forged, replay_cache=cache, now=1_000_000)
    p.verify_request(
        "pw", "POST", "/hm/v1/ha/failover?x=1", b'{"a":1}', headers_for(), replay_cache=cache, now=1_000_000
    )


def test_replay_cache_forgets_expired_nonces():
    cache = p.ReplayCache()
    assert cache.check_and_add("a" * 8, expires_at=10, now=0)
    assert not cache.check_and_add("a" * 8, expires_at=10, now=5)
    assert cache.check_and_add("b" * 8, expires_at=30, now=20)  # evicts a
    assert len(cache) == 1


def test_default_signature_uses_now_and_random_nonce():
    h1 = p.sign_request("pw", "GET", "/hm/v1/ha-info", b"")
    h2 = p.sign_request("pw", "GET", "/hm/v1/ha-info", b"")
    assert h1[p.HEADER_NONCE] != h2[p.HEADER_NONCE]
    p.verify_request("pw", "GET", "/hm/v1/ha-info", b"", h1, replay_cache=p.ReplayCache())


def test_instance_names_match_the_spec():
    assert p.instance_names(3) == {
        "secondary_db_name": "mseos3",
        "secondary_db_port": 1524,
        "standby_db_name": "mseos3s",
        "standby_db_port": 1624,
        "dataguard_name": "dg_mse3",
        "primary_db_alias": "mseop3s",
    }
    assert p.instance_names(4)["secondary_db_port"] == 1525


def test_mode_parse():
    assert p.Mode.parse("automatic") is p.Mode.AUTOMATIC
    with pytest.raises(ValueError):
        p.Mode.parse("sometimes")
