"""GET /metrics of real `serve` processes: off without a token, refused with a wrong one,
parsed by prometheus_client's own parser, and its figures following a switchover."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .agentutil import PORT, Proc, call, free_subnet, ha_info, node_toml, pair_toml, wait_until

pytestmark = pytest.mark.slow

TOKEN = "metrics-token-for-tests-0123"


def get(ip: str, token: str | None) -> tuple[int, str, str]:
    """(status, content type, body) of GET /metrics over the HM port's TLS (its certificate is
    the agent's own: not checked here, as a scraper pinning it would)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(f"https://{ip}:{PORT}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def scrape(ip: str) -> dict[tuple[str, tuple], float]:
    status, content_type, body = get(ip, TOKEN)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), (status, body[:300])
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_agent_metrics_parse_and_follow_a_switchover(tmp_path):
    net = free_subnet()
    p_ip, s_ip, vip = f"{net}.2", f"{net}.3", f"{net}.1"
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        f'[agent]\nmetrics_token = "{TOKEN}"\n\n'
        + node_toml("mp", "3355", "primary", p_ip, "pw-primary", vip=vip)
        + node_toml("ms", "3355", "secondary", s_ip, "pw-secondary")
        + pair_toml("mp", "ms", failover="Manual", failback="Manual", wait=3, stab=2)
    )
    procs = [Proc(fleet, name, tmp_path / name, tmp_path) for name in ("mp", "ms")]
    try:
        wait_until(
            lambda: (s := ha_info(s_ip, "pw-secondary")["peers"][0])["state"] == "SECONDARY_ACTIVE"
            and s["heartbeat"] == "Up" and s["data_replication"] == "Up",
            20, what="the pair Active",
        )  # fmt: skip
        # refused: no token, a wrong one (a JSON error, not the metrics)
        assert get(p_ip, None)[0] == 401 and get(p_ip, "x" * 20)[0] == 401
        wait_until(lambda: scrape(s_ip)[("mse_agent_heartbeats_sent_total", (("path", "hm"),))] >= 3, 10,
                   what="three beats sent")  # fmt: skip
        primary, secondary = scrape(p_ip), scrape(s_ip)
        info = (("device_type", "3355"), ("node", "ms"), ("role", "secondary"), ("version", "8.0.110.0"))
        assert secondary[("mse_agent_info", info)] == 1
        assert primary[("mse_agent_pair_state", (("peer", "ms"), ("state", "PRIMARY_ACTIVE")))] == 1
        assert secondary[("mse_agent_pair_state", (("peer", "mp"), ("state", "SECONDARY_ACTIVE")))] == 1
        assert primary[("mse_agent_pair_vip_owner", (("peer", "ms"),))] == 1
        assert secondary[("mse_agent_pair_vip_owner", (("peer", "mp"),))] == 0
        assert secondary[("mse_agent_pair_heartbeat_up", (("peer", "mp"),))] == 1
        assert primary[("mse_agent_heartbeats_received_total", (("path", "hm"),))] >= 3
        assert ("mse_agent_heartbeats_sent_total", (("path", "direct"),)) not in secondary  # no direct link
        assert secondary[("mse_agent_pair_replication_lag_records", (("peer", "mp"),))] == 0
        assert secondary[("mse_agent_pair_replication_lag_seconds", (("peer", "mp"),))] == 0
        assert 0 < secondary[("mse_agent_pair_heartbeat_response_seconds", (("peer", "mp"),))] < 0.5
        generation = secondary[("mse_agent_pair_generation", (("peer", "mp"),))]

        # a switchover: the secondary takes the VIP at the next generation
        status, out = call(p_ip, "pw-primary", "POST", "/hm/v1/ha/failover", {})
        assert status == 202, out
        wait_until(lambda: ha_info(s_ip, "pw-secondary")["peers"][0]["state"] == "FAILOVER_ACTIVE", 15,
                   what="the secondary FAILOVER_ACTIVE")  # fmt: skip
        after = scrape(s_ip)
        assert after[("mse_agent_pair_state", (("peer", "mp"), ("state", "FAILOVER_ACTIVE")))] == 1
        assert ("mse_agent_pair_state", (("peer", "mp"), ("state", "SECONDARY_ACTIVE"))) not in after
        assert after[("mse_agent_pair_vip_owner", (("peer", "mp"),))] == 1
        assert after[("mse_agent_pair_generation", (("peer", "mp"),))] == generation + 1
        assert after[("mse_agent_events", ())] > secondary[("mse_agent_events", ())]
    finally:
        for proc in procs:
            proc.stop()


def test_metrics_are_off_without_a_token(tmp_path):
    net = free_subnet()
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(node_toml("lone", "3355", "primary", f"{net}.2", "pw-lone", vip=f"{net}.1"))
    proc = Proc(fleet, "lone", tmp_path / "lone", tmp_path)
    try:
        wait_until(lambda: get(f"{net}.2", TOKEN)[0] != 0, 15, what="the agent listening")
        status, content_type, body = get(f"{net}.2", TOKEN)
        assert status == 404 and content_type.startswith("application/json") and "metrics_token" in body
    finally:
        proc.stop()
