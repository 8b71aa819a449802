"""Appliances whose clocks are off the portal's, as on a network without NTP: real agent
processes with their wall clock moved by libfaketime (their monotonic clock left alone).

- An agent 6 s ahead is added, and the poll measures its clock: the API and its page say
  how far off it is, and that it is off enough to matter.
- An agent 400 s ahead refuses the portal's signed requests (300 s of freshness): adding it
  fails saying its clock is 400 s ahead and to set NTP, not "check the password", and
  nothing is recorded."""

from __future__ import annotations

import pytest

from hapairs import polling
from hapairs.models import Appliance, HAPair
from hapairs.tests.e2e import AgentFarm, node_toml

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def farm(tmp_path, name: str, ip: str, password: str, *, ahead: float) -> AgentFarm:
    (tmp_path / name).mkdir()
    started = AgentFarm(tmp_path / name, node_toml(name, "3355", "secondary", ip, password), port=8001)
    started.clock_ahead = ahead
    return started.start()


def test_a_clock_off_the_portals_is_measured_and_one_past_the_signatures_window_is_refused_saying_so(
    tmp_path, subnet, api, client, operator_user
):
    ahead = farm(tmp_path, "clk-ahead", f"{subnet}.31", "pw-ahead", ahead=6)
    gone = farm(tmp_path, "clk-gone", f"{subnet}.32", "pw-gone", ahead=400)
    try:
        # Given an agent 6 s ahead: it is added, and a poll measures its clock
        response = api("post", "/appliances", {"name": "clk-ahead", "ip": f"{subnet}.31", "password": "pw-ahead"},
                       as_="admin")  # fmt: skip
        assert response.status_code == 201, response.content
        polling.poll()
        appliance = Appliance.objects.get(name="clk-ahead")
        assert appliance.reachability == "reachable"
        assert 5500 <= appliance.clock_offset_ms <= 6500, appliance.clock_offset_ms
        assert appliance.clock_skewed
        body = api("get", "/appliances/clk-ahead").json()
        assert 5.5 <= body["clock_offset_seconds"] <= 6.5, body
        client.force_login(operator_user)
        page = client.get("/mse/clk-ahead/").content.decode()
        assert "s ahead of the portal&#x27;s clock" in page and "same NTP servers" in page, page

        # When an agent 400 s ahead is added
        response = api("post", "/appliances", {"name": "clk-gone", "ip": f"{subnet}.32", "password": "pw-gone"},
                       as_="admin")  # fmt: skip
        # Then it is refused saying its clock is the matter, and nothing is recorded
        detail = response.json()["detail"]
        assert 400 <= response.status_code < 500 and response.status_code != 401, (response.status_code, detail)
        assert "refused the request as signed at the wrong time: its clock is 40" in detail, detail
        assert "s ahead of the portal's" in detail and "same NTP servers" in detail, detail
        assert "password" not in detail, detail
        assert not Appliance.objects.filter(name="clk-gone").exists()
    finally:
        ahead.stop()
        gone.stop()


def test_two_nodes_near_the_portals_clock_but_far_from_each_other_are_not_paired(tmp_path, subnet, api):
    # Given a primary 200 s behind the portal's clock, polled, and a secondary 200 s ahead of it
    p_ip, s_ip = f"{subnet}.41", f"{subnet}.42"
    (tmp_path / "p").mkdir()
    primary = AgentFarm(tmp_path / "p", node_toml("clk-p", "3355", "primary", p_ip, "pw-p", vip=f"{subnet}.40"),
                        port=8001)  # fmt: skip
    primary.clock_ahead = -200
    primary.start()
    secondary = farm(tmp_path, "clk-s", s_ip, "pw-s", ahead=200)
    try:
        assert (
            api("post", "/appliances", {"name": "clk-p", "ip": p_ip, "password": "pw-p"}, as_="admin").status_code
            == 201
        )
        polling.poll()
        assert -200_500 <= Appliance.objects.get(name="clk-p").clock_offset_ms <= -199_500

        # When they are paired: refused before anything is sent, saying why
        response = api("post", "/appliances/clk-p/ha", {"secondary_name": "clk-s", "secondary_ip": s_ip,
                                                        "secondary_password": "pw-s", "reason": "pair"})  # fmt: skip
        detail = response.json()["detail"]
        assert response.status_code == 409, (response.status_code, detail)
        assert "clk-p's and clk-s's clocks are 400 s apart" in detail and "same NTP servers" in detail, detail
        assert not HAPair.objects.exists() and not Appliance.objects.filter(name="clk-s").exists()
    finally:
        primary.stop()
        secondary.stop()
