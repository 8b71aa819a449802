"""A pair's witnesses, as the portal configures them: the configure screen (new pair and
update), the API, the secret at rest, what the pairing job sends, the status screen.

The real witness, real agents and a real worker are test_e2e_jobs.py's last test.
"""

from __future__ import annotations

import html
import io
import ipaddress
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from hapairs import selectors, services
from hapairs.jobsteps._common import _configure_body
from hapairs.management.commands.demo_fleet import DEMO_WITNESS, DEMO_WITNESS_PASSWORD
from hapairs.models import HAPair, Job
from hapairs.tests.test_api import token_for
from nodeagent.config import load_fleet

pytestmark = pytest.mark.django_db

SECRET = "wit-secret-77"  # never to be seen again once typed


@pytest.fixture
def nodes(make_appliance):
    """A 3355 primary (VIP .14) and a registered 3355 secondary: nothing asks an agent."""
    primary = make_appliance(name="p1", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    secondary = make_appliance(name="s1", hm_ip="127.10.10.16")
    return primary, secondary


@pytest.fixture
def witnessed(nodes):
    primary, secondary = nodes
    return services.ha_pair_create(
        primary=primary, secondary=secondary, witnesses=["127.30.0.1"], witness_password=SECRET
    )


def configure_form(**fields):
    return {
        "secondary_name": "s1",
        "secondary_ip": "127.10.10.16",
        "failover_type": "automatic",
        "failback_type": "manual",
        "failover_wait": "10",
        "witness_mode": "safe",
        "stage": "save",
        **fields,
    }


def error_of(page: str, field: str) -> str:
    at = page.index(f'id="err-{field}"')
    return html.unescape(page[at : page.index("</span>", at)])


def stored_ciphertext(pair) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT witness_password_ciphertext FROM {HAPair._meta.db_table} WHERE id = %s", [pair.pk])
        return cursor.fetchone()[0]


# --- Configure High Availability Parameters: a new pair ---------------------------------------
BAD_WITNESSES = {
    "not an address": ("witness-host", "A witness is \"IP:PORT\", not 'witness-host'."),
    "bad port": ("127.30.0.1:70000", "port must be 1-65535"),
    "the secondary's own address": ("127.10.10.16:8002", "is on s1's Health Monitor IP"),
    "the primary's own address": ("127.10.10.15", "is on p1's Health Monitor IP"),
    "the pair's VIP": ("127.10.10.14:9000", "is on the pair's virtual IP"),
    "a duplicate": ("127.30.0.1, 127.30.0.1:8002", "Witness 127.30.0.1:8002 is listed twice."),
    "more than seven": (" ".join(f"127.30.0.{i}" for i in range(1, 9)), "At most 7 witnesses, not 8"),
}


@pytest.mark.parametrize("case", list(BAD_WITNESSES))
def test_configure_refuses_bad_witnesses_next_to_the_field_saves_nothing_and_never_shows_the_password(
    case, client, nodes, operator_user
):
    text, words = BAD_WITNESSES[case]
    client.force_login(operator_user)
    response = client.post("/mse/p1/ha/configure/", configure_form(witnesses=text, witness_password=SECRET))
    page = response.content.decode()
    assert response.status_code == 400
    assert words in error_of(page, "witnesses")
    assert SECRET not in page  # the password input is empty again, never rendered back
    assert f'name="witnesses" value="{html.escape(text)}"' in page  # what was typed stays, to be corrected
    assert not HAPair.objects.exists() and not Job.objects.exists()
    assert "ha-configure-pending" not in client.session


def test_a_bad_witness_is_shown_beside_the_pairing_rules_never_instead(client, make_appliance, operator_user):
    make_appliance(name="p1", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    make_appliance(name="small", device_type="3310", hm_ip="127.10.10.17")
    client.force_login(operator_user)
    form = configure_form(secondary_name="small", secondary_ip="127.10.10.17", witnesses="127.10.10.17")
    page = client.post("/mse/p1/ha/configure/", form).content.decode()
    assert "MSE-3310 cannot back up an MSE-3355" in error_of(page, "secondary_name")
    assert "is on small's Health Monitor IP" in error_of(page, "witnesses")
    assert "Enter the witness password" in error_of(page, "witness_password")
    assert not HAPair.objects.exists()


def test_configure_needs_the_witness_password_with_witnesses_and_checks_it_live(client, nodes, operator_user):
    client.force_login(operator_user)
    response = client.post("/mse/p1/ha/configure/", configure_form(witnesses="127.30.0.1"))
    assert response.status_code == 400
    assert "Enter the witness password" in error_of(response.content.decode(), "witness_password")
    short = client.post("/mse/p1/ha/configure/", configure_form(witnesses="127.30.0.1", witness_password="abc"))
    assert "at least 4 characters" in error_of(short.content.decode(), "witness_password")
    # the same rule, live as the operator types (HTMX: the field's error out of band)
    live = client.post(
        "/mse/p1/ha/configure/", configure_form(witnesses="127.10.10.16", stage="validate"), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'id="err-witnesses" class="error" hx-swap-oob="true"' in live and "is on s1's" in html.unescape(live)
    assert not HAPair.objects.exists()


def test_configure_with_witnesses_confirms_without_the_password_then_keeps_it_encrypted(client, nodes, operator_user):
    client.force_login(operator_user)
    form = configure_form(witnesses="127.30.0.1 ,127.30.0.2:9000", witness_password=SECRET, witness_mode="availability")
    ask = client.post("/mse/p1/ha/configure/", form).content.decode()
    assert "Confirm the High Availability configuration" in ask and SECRET not in ask
    assert "127.30.0.1:8002, 127.30.0.2:9000" in ask and "may lose writes the primary acknowledged alone" in ask
    assert SECRET not in json.dumps(dict(client.session))  # pending in the session, encrypted
    token = ask.split('name="token" value="')[1].split('"')[0]
    client.post("/mse/p1/ha/configure/", {"stage": "confirm", "token": token})

    pair = HAPair.objects.get()
    assert (pair.witness_addresses, pair.witness_mode) == (["127.30.0.1:8002", "127.30.0.2:9000"], "availability")
    assert pair.get_witness_password() == SECRET
    ciphertext = stored_ciphertext(pair)
    assert ciphertext and SECRET not in ciphertext  # the column holds only the ciphertext
    assert "127.30.0.1:8002" in pair.events.get(code="pair_recorded").remarks
    # the update screen shows the witnesses again, never the password
    page = client.get("/mse/p1/ha/configure/").content.decode()
    assert "127.30.0.1:8002, 127.30.0.2:9000" in page and "A witness password is stored" in page
    assert SECRET not in page and ciphertext not in page


def test_the_witness_fields_help_says_what_each_mode_costs(client, nodes, operator_user):
    client.force_login(operator_user)
    page = html.unescape(client.get("/mse/p1/ha/configure/").content.decode())
    assert "When the witnesses cannot be reached and the primary is gone" in page
    assert "no write the primary acknowledged is lost" in page
    assert "may lose the writes the primary acknowledged while it was alone" in page
    assert 'name="witness_password"' in page and 'type="password"' in page


# --- an existing pair: the update form ---------------------------------------------------------
def update_form(**fields):
    return {
        "failover_type": "manual",
        "failback_type": "manual",
        "failover_wait": "10",
        "witness_mode": "safe",
        **fields,
    }


def test_an_update_changes_the_witnesses_keeping_a_blank_password_and_the_job_holds_no_secret(
    client, witnessed, operator_user
):
    client.force_login(operator_user)
    before = stored_ciphertext(witnessed)
    response = client.post("/mse/p1/ha/configure/", update_form(witnesses="127.30.0.1 127.30.0.3"))
    assert response.status_code == 302
    pair = HAPair.objects.get()
    assert pair.witness_addresses == ["127.30.0.1:8002", "127.30.0.3:8002"]
    assert stored_ciphertext(pair) == before and pair.get_witness_password() == SECRET  # kept
    job = Job.objects.get()
    assert job.kind == "update_ha" and job.params["witnesses"] is True
    assert "Witnesses set to 127.30.0.1:8002, 127.30.0.3:8002." in job.params["remarks"]
    assert SECRET not in json.dumps(job.params) and before not in json.dumps(job.params)


def test_an_update_refuses_witnesses_without_a_password_when_none_is_stored(client, nodes, operator_user):
    primary, secondary = nodes
    services.ha_pair_create(primary=primary, secondary=secondary)
    client.force_login(operator_user)
    response = client.post("/mse/p1/ha/configure/", update_form(witnesses="127.30.0.1"))
    assert response.status_code == 400
    page = response.content.decode()
    assert "Enter the witness password" in error_of(page, "witness_password")
    assert "No witness password is stored" in page
    assert HAPair.objects.get().witness_addresses == [] and not Job.objects.exists()
    bad = client.post("/mse/p1/ha/configure/", update_form(witnesses="127.10.10.15:8002", witness_password=SECRET))
    assert "is on p1's Health Monitor IP" in error_of(bad.content.decode(), "witnesses")
    assert SECRET not in bad.content.decode() and not Job.objects.exists()


def test_removing_the_witnesses_forgets_the_password_and_the_job_tells_the_agents(client, witnessed, operator_user):
    client.force_login(operator_user)
    response = client.post("/mse/p1/ha/configure/", update_form(witnesses=""))
    assert response.status_code == 302
    pair = HAPair.objects.select_related("primary", "secondary").get()
    assert pair.witness_addresses == [] and stored_ciphertext(pair) == ""
    job = Job.objects.get()
    assert job.params["witnesses"] is True and "Witnesses removed." in job.params["remarks"]
    # the job sends the empty list (else the agents would keep the old witnesses)
    body = _configure_body(pair, "secondary", send_witnesses=True)
    assert (body["witnesses"], body["witness_password"]) == ([], "")


# --- what the pairing job sends -----------------------------------------------------------------
def test_the_configure_body_carries_the_portals_witnesses_and_none_when_it_has_none(nodes):
    primary, secondary = nodes
    pair = services.ha_pair_create(
        primary=primary, secondary=secondary, witnesses=["127.30.0.1:8100"], witness_password=SECRET
    )
    for role in ("primary", "secondary"):
        body = _configure_body(HAPair.objects.select_related("primary", "secondary").get(pk=pair.pk), role)
        assert {k: body[k] for k in ("witnesses", "witness_password", "witness_mode")} == {
            "witnesses": ["127.30.0.1:8100"],
            "witness_password": SECRET,  # decrypted for the request only
            "witness_mode": "safe",
        }
    assert "direct_connect" not in body["peer"]  # no direct cable known: heartbeats on the HM network only
    type(secondary).objects.filter(pk=secondary.pk).update(direct_ip="198.19.7.2")
    cabled = _configure_body(HAPair.objects.select_related("primary", "secondary").get(pk=pair.pk), "primary")
    assert cabled["peer"]["direct_connect"] == "198.19.7.2"  # the primary heartbeats over the cable too
    HAPair.objects.filter(pk=pair.pk).update(witness_addresses=[], witness_password_ciphertext="")
    plain = _configure_body(HAPair.objects.select_related("primary", "secondary").get(pk=pair.pk), "primary")
    assert not {"witnesses", "witness_password", "witness_mode"} & set(plain)  # a fleet file's list stays


# --- the API ---------------------------------------------------------------------------------------
@pytest.fixture
def api(client, operator_user):
    token = token_for(operator_user)

    def call(method, path, body=None):
        return getattr(client, method)(
            f"/api/v1{path}",
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    return call


CONFIGURE = {"secondary_name": "s1", "secondary_ip": "127.10.10.16", "secondary_password": "s3cret-pass"}


@pytest.mark.parametrize(
    "extra,field,words",
    [
        ({"witnesses": ["witness-host"], "witness_password": SECRET}, "witnesses", 'A witness is "IP:PORT"'),
        ({"witnesses": ["127.10.10.16"], "witness_password": SECRET}, "witnesses", "is on s1's Health Monitor IP"),
        ({"witnesses": ["127.30.0.1", "127.30.0.1:8002"], "witness_password": SECRET}, "witnesses", "listed twice"),
        ({"witnesses": [f"127.30.0.{i}" for i in range(1, 9)], "witness_password": SECRET}, "witnesses", "At most 7"),
        ({"witnesses": ["127.30.0.1"]}, "witness_password", "Enter the witness password"),
    ],
)
def test_the_api_refuses_bad_witnesses_with_422_by_field_and_creates_nothing(api, nodes, extra, field, words):
    response = api("post", "/appliances/p1/ha", {**CONFIGURE, **extra})
    assert response.status_code == 422, response.content
    assert words in " ".join(response.json()["errors"][field])
    assert SECRET not in response.content.decode()
    assert not HAPair.objects.exists() and not Job.objects.exists()


def test_the_api_refuses_an_unknown_witness_mode_as_bad_input(api, nodes):
    response = api("post", "/appliances/p1/ha", {**CONFIGURE, "witness_mode": "sometimes"})
    assert response.status_code == 400 and "witness_mode" in response.json()["detail"]
    assert not HAPair.objects.exists()


def test_the_api_configures_witnesses_and_the_password_is_write_only(api, nodes):
    response = api("post", "/appliances/p1/ha", {**CONFIGURE, "witnesses": ["127.30.0.1"], "witness_password": SECRET})
    assert response.status_code == 202, response.content
    status = api("get", "/appliances/p1/ha")
    assert (status.json()["witnesses"], status.json()["witness_mode"]) == (["127.30.0.1:8002"], "safe")
    pair = HAPair.objects.get()
    for answer in (response, status):
        assert SECRET not in answer.content.decode() and stored_ciphertext(pair) not in answer.content.decode()
    assert SECRET not in stored_ciphertext(pair) and pair.get_witness_password() == SECRET

    # PATCH while the configure job runs: 409, and nothing written (the job's transaction)
    assert api("patch", "/appliances/p1/ha", {"witness_mode": "availability"}).status_code == 409
    assert HAPair.objects.get().witness_mode == "safe"
    # PATCH: what it leaves out is kept; a new password replaces the old one, unseen
    Job.objects.update(status="succeeded")
    assert api("patch", "/appliances/p1/ha", {"witness_mode": "availability"}).status_code == 202
    pair = HAPair.objects.get()
    assert (pair.witness_addresses, pair.witness_mode, pair.get_witness_password()) == (
        ["127.30.0.1:8002"],
        "availability",
        SECRET,
    )
    Job.objects.update(status="succeeded")
    refused = api("patch", "/appliances/p1/ha", {"witnesses": ["127.10.10.14"], "witness_password": "short"})
    assert refused.status_code == 422 and set(refused.json()["errors"]) == {"witnesses"}
    assert HAPair.objects.get().witness_addresses == ["127.30.0.1:8002"]
    changed = api("patch", "/appliances/p1/ha", {"witness_password": "another-secret"})
    assert changed.status_code == 202 and "another-secret" not in changed.content.decode()
    assert HAPair.objects.get().get_witness_password() == "another-secret"


# --- the status screen ---------------------------------------------------------------------------
def test_a_pair_with_portal_witnesses_is_witnessed_before_the_agents_report(client, witnessed, operator_user):
    pair = HAPair.objects.select_related("primary", "secondary").get()
    network = selectors.pair_network(pair)
    assert network.witnessed
    links = [(link.between, link.status) for link in network.links]
    assert ("p1 ↔ witness 127.30.0.1:8002", "unknown") in links and ("s1 ↔ witness 127.30.0.1:8002", "unknown") in links
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/").content.decode()
    assert 'id="no-witness-risk"' not in page and "witnesses 127.30.0.1:8002 (safe mode)" in page
    assert SECRET not in page
    # once an agent answers, its answer replaces the placeholder
    HAPair.objects.filter(pk=pair.pk).update(
        primary_witnesses=[{"address": "127.30.0.1:8002", "ok": True, "answer": "lease for 3 s"}]
    )
    links = [(link.between, link.status) for link in selectors.pair_network(HAPair.objects.get()).links]
    assert ("p1 ↔ witness 127.30.0.1:8002", "up") in links and ("p1 ↔ witness 127.30.0.1:8002", "unknown") not in links


def test_the_admin_never_shows_the_witness_password(client, witnessed, admin_user_):
    client.force_login(admin_user_)
    page = client.get(f"/admin/hapairs/hapair/{witnessed.pk}/change/").content.decode()
    assert "127.30.0.1:8002" in page
    assert SECRET not in page and stored_ciphertext(witnessed) not in page


# --- the demo (make run) ----------------------------------------------------------------------------
def test_the_demo_gives_its_automatic_pair_the_procfiles_loopback_witness(settings):
    # Given make run's fleet, registered (as demo_fleet's first part does once the agents answer)
    settings.DEBUG = True
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = ""
    for node in load_fleet("fleet/demo.toml").nodes.values():
        services.appliance_create(
            name=node.name,
            device_type=node.device_type,
            hm_ip=node.hm_ip,
            version=node.version,
            password=node.password,
            role=node.role.value,
            vip=node.vip,
            udi=node.udi,
            vip_prefixlen=ipaddress.IPv4Network(f"0.0.0.0/{node.netmask}").prefixlen if node.vip else None,
        )
    # When demo_fleet runs
    out = io.StringIO()
    call_command("demo_fleet", wait=0, stdout=out)

    # Then the one Automatic-failover pair has the witness Procfile.dev starts, on loopback
    auto = HAPair.objects.get(failover_type="automatic")
    assert auto.primary.name == "mse3355-1" and ipaddress.IPv4Address(DEMO_WITNESS.split(":")[0]).is_loopback
    assert (auto.witness_addresses, auto.get_witness_password()) == ([DEMO_WITNESS], DEMO_WITNESS_PASSWORD)
    assert f"pairing mse3355-1 → mse3355-2, witness {DEMO_WITNESS}" in out.getvalue()
    assert [p.witness_addresses for p in HAPair.objects.exclude(pk=auto.pk)] == [[]] * 4
    procfile = (Path(settings.BASE_DIR) / "Procfile.dev").read_text()
    assert f"nodeagent witness --listen {DEMO_WITNESS} --password {DEMO_WITNESS_PASSWORD}" in procfile


def test_the_demo_refuses_a_witness_off_loopback(settings):
    settings.DEBUG = True
    with pytest.raises(CommandError, match="not a loopback address"):
        call_command("demo_fleet", wait=0, witness="10.0.0.5:8002", stdout=io.StringIO())
    assert not HAPair.objects.exists()


def test_two_tabs_configuring_two_primaries_each_keep_their_confirmation(client, make_appliance, operator_user):
    """Only one confirmation could be pending per session: the first tab's Confirm asked
    for the form again once the second tab had saved. They are kept by primary now."""
    for n in (1, 2):
        make_appliance(name=f"p{n}", hm_ip=f"127.10.1{n}.15", vip=f"127.10.1{n}.14", vip_prefixlen=24)
        make_appliance(name=f"s{n}", hm_ip=f"127.10.1{n}.16")
    client.force_login(operator_user)
    tokens = {}
    for n in (1, 2):  # both tabs saved: two confirmations asked for
        form = configure_form(secondary_name=f"s{n}", secondary_ip=f"127.10.1{n}.16")
        ask = client.post(f"/mse/p{n}/ha/configure/", form).content.decode()
        tokens[n] = ask.split('name="token" value="')[1].split('"')[0]
    # a stale token (another tab's) takes nothing
    stale = client.post("/mse/p1/ha/configure/", {"stage": "confirm", "token": tokens[2]}, follow=True)
    assert "That confirmation has expired" in stale.content.decode() and not HAPair.objects.exists()
    for n in (1, 2):  # the first tab confirms first, then the second
        client.post(f"/mse/p{n}/ha/configure/", {"stage": "confirm", "token": tokens[n]})
    assert sorted(p.primary.name for p in HAPair.objects.select_related("primary")) == ["p1", "p2"]
    assert Job.objects.count() == 2 and "ha-configure-pending" not in client.session
    # a token is used once (p1 is paired now: its screen is the update form, and nothing is queued)
    client.post("/mse/p1/ha/configure/", {"stage": "confirm", "token": tokens[1]})
    assert Job.objects.count() == 2
