"""Failover drills end to end: two real agents (each in its own process), a real worker,
the API. The drill's job switches over, waits out the stabilisation window (8 s here),
fails back and waits for replication; meanwhile its probe writes through the VIP over
HTTPS (pinned to the two nodes' certificates) and reads every write back at the end."""

from __future__ import annotations

import pytest

from hapairs.models import Drill, HAEvent
from hapairs.tests.conftest import STABILISATION
from hapairs.tests.e2e import farm_per_node, pair_through_api, wait_for, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_drill_switches_over_fails_back_and_scores_what_its_clients_saw(tmp_path, subnet, worker, api):
    # Given a healthy pair, in sync
    p_ip, s_ip, vip = f"{subnet}.35", f"{subnet}.36", f"{subnet}.34"
    primary, secondary = ("drill-p", p_ip, "pw-primary", vip), ("drill-s", s_ip, "pw-secondary")
    farm_p, farm_s = farm_per_node(tmp_path, primary, secondary)
    try:
        pair_through_api(api, worker, primary, secondary)
        wait_for(
            lambda: api("get", "/appliances/drill-p/ha/preflight?action=switchover").json()["allowed"],
            timeout=60,
            what="the pair to pass the pre-flight check",
        )

        # When an operator starts a drill (a second one at once is refused: one job per pair)
        started = api("post", "/appliances/drill-p/ha/drills", {"reason": "quarterly drill"})
        assert started.status_code == 202, started.content
        assert started.json()["drill"]["status"] == "pending" and started.json()["job"]["kind"] == "drill"
        again = api("post", "/appliances/drill-p/ha/drills", {"reason": "again"})
        assert again.status_code == 409 and "drill" in again.json()["detail"].lower(), again.json()
        wait_job(api, started.json()["job"]["id"], timeout=STABILISATION + 150, worker=worker)

        # Then it is in the pair's history with a scorecard of real figures
        (drill,) = api("get", "/appliances/drill-p/ha/drills").json()
        card = drill["scorecard"]
        assert drill["status"] == "succeeded" and drill["requested_by"] == "operator1", drill
        assert card["probe"] == "ran" and card["served_by"] == ["drill-p", "drill-s"], card
        assert card["writes_attempted"] >= 20 * STABILISATION  # 20 a second, for the whole drill
        assert card["writes_acknowledged"] > card["writes_attempted"] / 2
        assert card["writes_lost"] == 0, card  # every acknowledged write read back after the failback
        assert 0 <= card["detection_s"] <= card["decision_s"] <= card["vip_moved_s"] < 15, card
        assert card["vip_moved_s"] - 0.5 <= card["first_success_s"] < card["vip_moved_s"] + 5, card
        assert 0 < card["outage_s"] < 15 and 0 < card["failback_outage_s"] < 15, card
        assert card["catch_up_s"] is not None and 0 <= card["catch_up_s"] < 60, card
        row = Drill.objects.get()
        assert set(row.marks) == {"switchover", "failback", "caught_up"}
        assert row.marks["failback"] - row.marks["switchover"] >= STABILISATION  # the window was waited out
        # and the Events Log says it, with the figures
        done = HAEvent.objects.get(code="drill_completed")
        assert "Acknowledged writes lost: 0" in done.remarks and done.job_id == row.job_id
        status = api("get", "/appliances/drill-p/ha").json()
        assert status["primary_state"] == "PRIMARY_ACTIVE" and status["secondary_state"] == "SECONDARY_ACTIVE"
    finally:
        farm_p.stop()
        farm_s.stop()
