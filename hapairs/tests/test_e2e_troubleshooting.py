"""The seed's troubleshooting (spec §8) end to end, with real agents in their own processes,
a real worker and the API: "the secondary cannot be deleted while the manager cannot
reach it"."""

from __future__ import annotations

import threading
import time

import pytest

from hapairs.models import HAEvent, HAPair, Job
from hapairs.tests.e2e import farm_per_node, pair_through_api, wait_for
from hapairs.tests.test_e2e_recovery import vip_call

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def finished(api, job_id, timeout=90):
    return wait_for(
        lambda: (body := api("get", f"/jobs/{job_id}").json())["status"] in ("succeeded", "failed") and body,
        timeout=timeout,
        what=f"job {job_id}",
    )


def test_a_secondary_that_stays_down_is_removed_from_the_primary_only_and_stands_down_when_it_returns(
    tmp_path, subnet, worker, api, settings
):
    # Given a pair with automatic failover (a returning secondary would take over if it could)
    p_ip, s_ip, vip = f"{subnet}.45", f"{subnet}.46", f"{subnet}.44"
    farm_p, farm_s = farm_per_node(tmp_path, ("gone-p", p_ip, "pw-primary", vip), ("gone-s", s_ip, "pw-secondary"))
    try:
        pair_through_api(
            api,
            worker,
            ("gone-p", p_ip, "pw-primary", vip),
            ("gone-s", s_ip, "pw-secondary"),
            failover="automatic",
            wait=2,
        )
        assert vip_call(vip, "pw-primary", "POST", {"mac": "00:00:00:00:00:01", "x": 1, "y": 1, "floor": 1})[0] == 201

        # When the secondary's agent is killed and stays down
        farm_s.kill()
        wait_for(lambda: HAPair.objects.get().secondary_reachable is False, timeout=20, what="gone-s unreachable")

        # Then the normal delete fails, saying what can be done
        response = api("delete", "/appliances/gone-p/ha?reason=decommission+gone-s")
        assert response.status_code == 202, response.content
        job = finished(api, response.json()["id"], timeout=120)
        assert job["status"] == "failed" and job["step"] == "Removing the pairing on the secondary", job
        assert "If it is down or will be rebuilt, remove the pairing from the primary only" in job["error"], job
        assert HAPair.objects.exists()

        # and the one-side removals refuse what is unsafe or unconfirmed, with reasons
        url = "/appliances/gone-p/ha/remove-from"
        body = {"reason": "gone-s's disks died", "confirm": True}
        refused = api("post", f"{url}/secondary", body)
        assert refused.status_code == 409 and "gone-p answers the portal" in refused.json()["detail"], refused.json()
        unconfirmed = api("post", f"{url}/primary", {**body, "confirm": False})
        assert unconfirmed.status_code == 422 and "Confirm that gone-s is down" in unconfirmed.json()["detail"]
        assert api("post", f"{url}/primary", {"confirm": True}).status_code == 400  # a reason is required

        # When the operator removes the pairing from the primary only
        response = api("post", f"{url}/primary", body)
        assert response.status_code == 202, response.content
        job = finished(api, response.json()["id"])
        assert job["status"] == "succeeded", (job["step"], job["error"])
        wait_for(lambda: HAEvent.objects.filter(code="job_completed", job_id=job["id"]).exists(), timeout=10,
                 what="the removal's completed event")  # fmt: skip

        # Then the pair is gone, and the primary still serves its VIP and its data
        assert not HAPair.objects.exists()
        status, listing = vip_call(vip, "pw-primary")
        assert status == 200 and listing["served_by"] == "gone-p" and listing["count"] == 1, listing

        # When the old secondary comes back, still paired (its state directory kept)
        farm_s.start()

        # Then it is told the pairing is gone and stands down, and the portal records it
        event = wait_for(
            lambda: HAEvent.objects.filter(appliance__name="gone-s", code="pairing_removed_by_peer").first(),
            timeout=30,
            what="gone-s standing down",
        )
        assert event.why["rule"] == "pairing.removed_by_peer" and event.pair_id is None
        assert "no longer knows this pairing" in event.remarks
        # and it never took the VIP: three times the wait later, the primary alone serves it
        deadline = time.monotonic() + 3 * 2
        while time.monotonic() < deadline:
            status, listing = vip_call(vip, "pw-primary")
            assert status == 200 and listing["served_by"] == "gone-p", listing
            time.sleep(0.3)
        assert not HAEvent.objects.filter(appliance__name="gone-s", code="vip_taken", timestamp__gt=event.timestamp)
        # and the portal shows it unpaired (no HA configuration left on it)
        wait_for(lambda: api("get", "/appliances/gone-s").json()["ha_state"] == "UNKNOWN", timeout=20,
                 what="gone-s shown unpaired")  # fmt: skip
        assert Job.objects.filter(kind="remove_from_primary", status="succeeded").count() == 1
    finally:
        farm_p.stop()
        farm_s.stop()


class Writer:
    """A client writing through the VIP, one new element every 50 ms, until stopped."""

    def __init__(self, vip: str, password: str, prefix: str):
        self.vip, self.password, self.prefix = vip, password, prefix
        self.acked: list[str] = []
        self.failed: list[tuple[int | None, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            mac = f"{self.prefix}:{i >> 8 & 255:02x}:{i & 255:02x}"
            status, _ = vip_call(self.vip, self.password, "POST", {"mac": mac, "x": i, "y": 0, "floor": 1})
            (self.acked.append(mac) if status == 201 else self.failed.append((status, mac)))
            i += 1
            self._stop.wait(0.05)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_synchronisation_stuck_at_x_percent_is_shown_and_reset_while_the_primary_loses_no_write(
    tmp_path, subnet, worker, api, settings, client, operator_user
):
    settings.SYNC_STALL_SECONDS = 4
    p_ip, s_ip, vip = f"{subnet}.55", f"{subnet}.56", f"{subnet}.54"
    primary, secondary = ("sync-p", p_ip, "pw-primary", vip), ("sync-s", s_ip, "pw-secondary")
    farm_p, farm_s = farm_per_node(tmp_path, primary, secondary)
    try:
        # Given an Active pair whose secondary was away while the primary took 600 writes
        pair_through_api(api, worker, primary, secondary)
        wait_for(lambda: api("get", "/appliances/sync-p/ha").json()["data_replication"] == "Up", timeout=30,
                 what="the pair in sync")  # fmt: skip
        farm_s.stop()
        for i in range(600):
            mac = f"02:00:00:00:{i >> 8 & 255:02x}:{i & 255:02x}"
            assert vip_call(vip, "pw-primary", "POST", {"mac": mac, "x": i, "y": 0, "floor": 1})[0] == 201
        # and whose copy of the instance is bloated on a disk that is nearly full: it comes back
        # able to write only a few kilobytes more, and the catch-up stalls
        log = tmp_path / "s" / "state" / "sync-s" / "instances" / f"{HAPair.objects.get().instance_db_name}.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as f:
            f.write(b"not a record\n" * 30_000)  # 390 KB the store skips: not JSON
        farm_s.max_file_bytes = log.stat().st_size + 8_000
        farm_s.start()

        with Writer(vip, "pw-primary", "02:00:00:01") as writer:
            # Then the stall is detected and shown, with its percentage and since when
            def stuck():
                page = client.get("/mse/sync-p/ha/").content.decode()
                return "Synchronisation stuck at" in page and page

            client.force_login(operator_user)
            page = wait_for(stuck, timeout=60, what="the stall on the status screen")
            assert 'data-trouble="sync_stuck"' in page and "Reset synchronisation…" in page
            stuck_at = HAPair.objects.get().sync_best
            assert 0 <= stuck_at < 100

            # When the operator resets it, emptying the secondary's copy (confirmed)
            url = "/appliances/sync-p/ha/reset-sync"
            unconfirmed = api("post", url, {"reason": "copy stuck", "empty_data": True})
            assert unconfirmed.status_code == 422 and "nothing sync-p holds is lost" in unconfirmed.json()["detail"]
            response = api("post", url, {"reason": "copy stuck", "empty_data": True, "confirm_empty": True})
            assert response.status_code == 202, response.content
            job = finished(api, response.json()["id"], timeout=120)
            assert job["status"] == "succeeded", (job, worker.tail())

            # Then the pair is Active again, the secondary in sync
            status = api("get", "/appliances/sync-p/ha").json()
            assert (status["primary_state"], status["secondary_state"]) == ("PRIMARY_ACTIVE", "SECONDARY_ACTIVE")
            assert status["data_replication"] == "Up" and status["sync_percent"] == 100
            time.sleep(1)  # a few more writes after it
        # and the primary acknowledged every write throughout, and holds them all
        assert writer.failed == [] and len(writer.acked) > 20, writer.failed[:5]
        status, listing = vip_call(vip, "pw-primary")
        held = {element["mac"] for element in listing["elements"]} if listing else set()
        assert status == 200 and listing["count"] == 600 + len(writer.acked)
        assert set(writer.acked) <= held
        reset = HAEvent.objects.filter(appliance__name="sync-s", code="sync_reset").first()
        assert reset is not None and "its data emptied" in reset.remarks and reset.job_id == job["id"]
        assert not HAPair.objects.get().sync_best_at  # forgotten once in sync
    finally:
        farm_p.stop()
        farm_s.stop()
