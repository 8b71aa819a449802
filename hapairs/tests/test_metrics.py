"""GET /metrics: refused without a token, parsed by prometheus_client's own parser, and its
figures the database's (they change as rows do)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from hapairs import services
from hapairs.choices import EventCode, JobKind, JobStatus
from hapairs.models import Appliance, HAPair, Job
from hapairs.services._common import event_record

pytestmark = pytest.mark.django_db


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
def token(monitor_user):
    return services.api_token_issue(user=monitor_user)


def test_metrics_are_refused_without_a_token_or_an_allowed_network(client, settings):
    settings.METRICS_NETWORKS = []
    response = client.get("/metrics")
    assert response.status_code == 401 and "Bearer" in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer mse_not-a-token").status_code == 401
    settings.METRICS_NETWORKS = ["192.0.2.0/24"]  # the test client is 127.0.0.1
    assert client.get("/metrics").status_code == 401


def test_a_scrape_from_an_allowed_network_needs_no_token(client, settings, make_appliance):
    make_appliance(name="lone")
    settings.METRICS_NETWORKS = ["127.0.0.0/8"]
    assert scrape(client)[("mseportal_appliances", (("reachability", "unknown"),))] == 1


def test_the_figures_are_the_databases_and_follow_a_switchover(client, token, make_appliance):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    primary = make_appliance(name="p1", hm_ip="127.30.0.2", vip="127.30.0.1", vip_prefixlen=24)
    secondary = make_appliance(name="s1", hm_ip="127.30.0.3")
    make_appliance(name="spare", hm_ip="127.30.0.4")
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    HAPair.objects.filter(pk=pair.pk).update(heartbeat="up", replication="up", mean_heartbeat_ms=0.7)
    Appliance.objects.filter(name__in=["p1", "s1"]).update(reachability="reachable")
    before = scrape(client, **auth)
    assert before[("mseportal_appliances", (("reachability", "reachable"),))] == 2
    assert before[("mseportal_appliances", (("reachability", "unknown"),))] == 1
    assert before[("mseportal_pairs", (("heartbeat", "up"), ("replication", "up")))] == 1
    assert before[("mseportal_pair_heartbeat_response_seconds_bucket", (("le", "0.0005"),))] == 0
    assert before[("mseportal_pair_heartbeat_response_seconds_bucket", (("le", "0.001"),))] == 1
    assert before[("mseportal_pair_heartbeat_response_seconds_count", ())] == 1
    assert before[("mseportal_pair_heartbeat_response_seconds_sum", ())] == pytest.approx(0.0007)
    assert before[("mseportal_failovers_total", (("cause", "operator"),))] == 0
    assert before[("mseportal_failovers_total", (("cause", "automatic"),))] == 0
    assert before[("mseportal_pairs_split_brain", ())] == 0

    # a switchover: its job ran 4 s, the secondary took over and says so; then one automatic
    now = timezone.now()
    job = Job.objects.create(
        kind=JobKind.SWITCHOVER, status=JobStatus.SUCCEEDED, pair=pair, started_at=now - timedelta(seconds=4),
        finished_at=now,
    )  # fmt: skip
    event_record(code=EventCode.FAILOVER_ACTIVE, generated_by="s1", pair=pair, appliance=secondary, job=job)
    event_record(code=EventCode.FAILOVER_ACTIVE, generated_by="s1", pair=pair, appliance=secondary)
    HAPair.objects.filter(pk=pair.pk).update(secondary_state="FAILOVER_ACTIVE")
    after = scrape(client, **auth)
    assert after[("mseportal_failovers_total", (("cause", "operator"),))] == 1
    assert after[("mseportal_failovers_total", (("cause", "automatic"),))] == 1
    assert after[("mseportal_failbacks_total", (("cause", "operator"),))] == 0
    assert after[("mseportal_jobs_total", (("kind", "switchover"), ("status", "succeeded")))] == 1
    assert after[("mseportal_job_duration_seconds_bucket", (("kind", "switchover"), ("le", "2.0")))] == 0
    assert after[("mseportal_job_duration_seconds_bucket", (("kind", "switchover"), ("le", "5.0")))] == 1
    assert after[("mseportal_job_duration_seconds_sum", (("kind", "switchover"),))] == pytest.approx(4.0)
    assert after[("mseportal_pair_secondary_states", (("state", "FAILOVER_ACTIVE"),))] == 1
    assert ("mseportal_pair_secondary_states", (("state", "FAILOVER_ACTIVE"),)) not in before


def test_the_clocks_measured_are_in_the_metrics(client, token, make_appliance, settings):
    settings.CLOCK_SKEW_WARN_SECONDS = 2
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    for name, offset in (("c1", 150), ("c2", -4200), ("c3", 2000), ("c4", None)):
        make_appliance(name=name)
        Appliance.objects.filter(name=name).update(clock_offset_ms=offset)
    samples = scrape(client, **auth)
    assert samples[("mseportal_appliance_clock_offset_max_seconds", ())] == 4.2
    assert samples[("mseportal_appliances_clock_skewed", ())] == 2  # c2 behind, c3 at the limit
    Appliance.objects.filter(name="c2").update(clock_offset_ms=100)
    samples = scrape(client, **auth)
    assert samples[("mseportal_appliance_clock_offset_max_seconds", ())] == 2.0
    assert samples[("mseportal_appliances_clock_skewed", ())] == 1


def test_the_poll_rounds_are_in_the_metrics(client, token, settings, tmp_path):
    from hapairs import sharding

    settings.VAR_DIR = tmp_path  # the filesystem store of the rounds (no Redis broker here)
    settings.CELERY_BROKER_URL = "filesystem://"
    sharding.round_record(3, {"appliances": 120, "unreachable": 2, "seconds_network": 0.41,
                              "seconds_database": 0.08, "finished_at": 1_800_000_000.5})  # fmt: skip
    got = scrape(client, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert got[("mseportal_poll_round_seconds", (("part", "network"), ("shard", "3")))] == pytest.approx(0.41)
    assert got[("mseportal_poll_round_seconds", (("part", "database"), ("shard", "3")))] == pytest.approx(0.08)
    assert got[("mseportal_poll_round_appliances", (("shard", "3"),))] == 120
    assert got[("mseportal_poll_round_unreachable", (("shard", "3"),))] == 2


def test_openmetrics_when_the_scraper_asks_for_it(client, token, make_appliance):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics

    make_appliance(name="lone")
    response = client.get(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0"
    )
    assert response["Content-Type"].startswith("application/openmetrics-text")
    families = {family.name: family for family in openmetrics(response.content.decode())}
    assert families["mseportal_failovers"].type == "counter"
    assert [s.value for s in families["mseportal_appliances"].samples] == [1]


def test_the_grafana_dashboard_asks_only_for_metrics_the_portal_and_the_agents_export(client, token):
    """docs/grafana-dashboard.json: each query names families that exist (the portal's from a
    scrape; the agents' from nodeagent.metrics, whose scrape test_metrics in nodeagent parses)."""
    import json
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    dashboard = json.loads((repo / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10 and dashboard["uid"] == "mseportal-ha-fleet"
    named = set(re.findall(r"\b(mse(?:portal|_agent)_[a-z_]+)", " ".join(exprs)))
    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content.decode()
    portal = set()
    for family in text_string_to_metric_families(body):  # every family, with samples or none yet
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        portal.update(family.name + suffix for suffix in suffixes)
    agent_source = (repo / "nodeagent" / "metrics.py").read_text()
    for name in sorted(named):
        if name.startswith("mseportal_"):
            assert name in portal, f"the dashboard asks for {name}, which the portal does not export"
        else:
            base = name.removeprefix("mse_agent_").removesuffix("_total")
            assert f'"mse_agent_{base}"' in agent_source or f'("{base}",' in agent_source, name
