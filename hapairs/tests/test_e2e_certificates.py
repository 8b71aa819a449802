"""End to end: a changed agent certificate is refused, clearly, until an Admin trusts it.

Real agents (one farm process), a real worker, the API. A pair made through the API pins
both certificates (and each peer pins the other at configure); the secondary's certificate
is then replaced (its ``tls/`` removed, the farm restarted: it makes a new one). A poll marks
it with the changed certificate, the API and the status say so, a job on it fails at once
with the message; an Operator may not trust it; an Admin trusting another fingerprint than
the presented one is refused; an Admin trusting the presented one is recorded as an event,
and the next poll reaches it again.
"""

from __future__ import annotations

import shutil

import pytest

from hapairs import polling
from hapairs.choices import EventCode
from hapairs.models import Appliance, HAEvent
from hapairs.tests.e2e import AgentFarm, node_toml, pair_through_api, wait_for
from nodeagent import tlsid

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHANGED = "an Admin can trust the new one"


def test_a_replaced_certificate_is_refused_until_an_admin_trusts_it(tmp_path, subnet, worker, api):
    # Given a pair made through the API: both certificates pinned as the agents made them
    p_ip, s_ip, vip = f"{subnet}.25", f"{subnet}.26", f"{subnet}.24"
    farm = AgentFarm(
        tmp_path,
        node_toml("pin-p", "3355", "primary", p_ip, "pw-primary", vip=vip)
        + node_toml("pin-s", "3355", "secondary", s_ip, "pw-secondary"),
        port=8001,
    ).start()
    try:
        pair_through_api(api, worker, ("pin-p", p_ip, "pw-primary"), ("pin-s", s_ip, "pw-secondary"))
        cert = tmp_path / "state" / "pin-s" / "tls" / "cert.pem"
        old = tlsid.read_fingerprint(cert)
        assert api("get", "/appliances/pin-s").json()["tls_fingerprint"] == old
        primary_pin = tlsid.read_fingerprint(tmp_path / "state" / "pin-p" / "tls" / "cert.pem")
        assert api("get", "/appliances/pin-p").json()["tls_fingerprint"] == primary_pin

        # When the secondary's certificate is replaced (the agent makes a new one at start)
        farm.stop()
        shutil.rmtree(cert.parent)
        farm.start()
        new = tlsid.read_fingerprint(cert)
        assert new != old

        # Then a poll marks it with the changed certificate
        polling.poll()
        secondary = Appliance.objects.get(name="pin-s")
        assert (secondary.tls_fingerprint, secondary.tls_presented) == (old, new)
        body = api("get", "/appliances/pin-s").json()
        assert CHANGED in body["certificate_problem"] and new in body["certificate_problem"]
        status = api("get", "/appliances/pin-p/ha").json()
        assert len(status["certificate_problems"]) == 1 and CHANGED in status["certificate_problems"][0]
        assert HAEvent.objects.filter(appliance=secondary, code=EventCode.CERTIFICATE_CHANGED).count() == 1
        # (while the farm was down the worker's polls rightly saw an outage; the unit tests show a
        # changed certificate alone records none)

        # and a job on it fails at once, with that message
        response = api("post", "/appliances/pin-s/services/start", {"reason": "after the re-install"})
        assert response.status_code == 202, response.content
        job_id = response.json()["id"]
        job = wait_for(
            lambda: (b := api("get", f"/jobs/{job_id}").json())["status"] in ("succeeded", "failed") and b,
            timeout=30,
            what="the job",
        )
        assert job["status"] == "failed" and "presented a different TLS certificate" in job["error"], job
        assert "gave up after" not in job["error"]  # not retried as an outage

        # An Operator may not trust it
        response = api("post", "/appliances/pin-s/certificate/trust", {"fingerprint": new})
        assert response.status_code == 403 and "may not trust" in response.json()["detail"]
        # An Admin confirming another fingerprint than the presented one is refused; nothing changes
        response = api("post", "/appliances/pin-s/certificate/trust", {"fingerprint": primary_pin}, as_="admin")
        assert response.status_code == 422 and new in response.json()["detail"]
        secondary.refresh_from_db()
        assert (secondary.tls_fingerprint, secondary.tls_presented) == (old, new)
        assert not HAEvent.objects.filter(code=EventCode.CERTIFICATE_TRUSTED).exists()

        # An Admin trusting the presented one: pinned, recorded with both fingerprints and who
        response = api("post", "/appliances/pin-s/certificate/trust", {"fingerprint": new}, as_="admin")
        assert response.status_code == 200, response.content
        assert response.json()["tls_fingerprint"] == new and response.json()["certificate_problem"] == ""
        (trusted,) = HAEvent.objects.filter(code=EventCode.CERTIFICATE_TRUSTED)
        assert old in trusted.remarks and new in trusted.remarks and "admin1" in trusted.remarks

        # and the next poll reaches it again
        polling.poll()
        secondary.refresh_from_db()
        assert (secondary.reachability, secondary.tls_fingerprint, secondary.tls_presented) == ("reachable", new, "")
        assert api("get", "/appliances/pin-p/ha").json()["certificate_problems"] == []
    finally:
        farm.stop()
