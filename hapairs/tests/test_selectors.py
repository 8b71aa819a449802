"""Every read of ``hapairs.selectors`` against real rows: what it returns, and how many
queries it costs (the same whether there are two rows or twenty)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hapairs import selectors, services
from hapairs.choices import JobKind, JobStatus, LicenseStatus
from hapairs.models import Appliance, HAEvent, HAPair, HeartbeatSample, Job, License, LicenseFile
from hapairs.tests.e2e import AgentFarm, node_toml
from hapairs.tests.loopback import Reply, ScriptedAgent, fresh_subnet
from nodeagent import protocol

pytestmark = pytest.mark.django_db

HEALTHY = {  # what the poller records for an Active pair
    "primary_state": "PRIMARY_ACTIVE",
    "secondary_state": "SECONDARY_ACTIVE",
    "heartbeat": "up",
    "replication": "up",
    "sync_percent": 100,
    "primary_reachable": True,
    "secondary_reachable": True,
    "primary_services_up": True,
    "secondary_services_up": True,
    "primary_generation": 1,
    "secondary_generation": 1,
    "generation": 1,
    "primary_in_charge": True,
}
FAILED_OVER = {
    **HEALTHY,
    "primary_state": "TERMINATED",
    "secondary_state": "FAILOVER_ACTIVE",
    "primary_generation": 2,
    "secondary_generation": 2,
    "generation": 2,
    "primary_in_charge": False,
    "secondary_in_charge": True,
}


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def ha_pair_factory(make_appliance):
    """``ha_pair_factory(n, secondary=None, **status)``: an MSE-3350 primary p<n> backed by an
    MSE-3355 s<n> (or the secondary given), recorded through the service, with the status the
    poller would write. Addresses only, in 127.73.0.0/16: nothing listens there."""

    def make(n: int, *, secondary: Appliance | None = None, primary_type: str = "3350", **status) -> HAPair:
        primary = make_appliance(
            name=f"p{n:02d}", device_type=primary_type, hm_ip=f"127.73.1.{n}", vip=f"127.73.2.{n}", vip_prefixlen=16
        )
        secondary = secondary or make_appliance(name=f"s{n:02d}", device_type="3355", hm_ip=f"127.73.3.{n}")
        pair = services.ha_pair_create(primary=primary, secondary=secondary)
        if status:
            HAPair.objects.filter(pk=pair.pk).update(**status)
        return HAPair.objects.select_related("primary", "secondary", "maintenance_by").get(pk=pair.pk)

    return make


@pytest.fixture
def ha_pair(ha_pair_factory) -> HAPair:
    """p01 → s01, Active, polled a moment ago."""
    return ha_pair_factory(1, status_updated_at=timezone.now(), **HEALTHY)


@pytest.fixture
def license_line(make_appliance):
    """``license_line(appliance, feature, status=..., expires_in_days=None)``: one line of its own file."""
    made = []

    def make(
        appliance, feature="MSE_ACTIVATION", *, status=LicenseStatus.VERIFIED, expires_in_days=None, installed_on=None
    ) -> License:
        n = len(made)
        stored = LicenseFile.objects.create(
            filename=f"{appliance.name}-{n}.lic",
            sha256=f"{appliance.pk:032d}{n:032d}",
            content=f"INCREMENT {feature} ({n})",
            appliance=appliance,
        )
        expires = timezone.localdate() + timedelta(days=expires_in_days) if expires_in_days is not None else None
        line = License.objects.create(
            source_file=stored,
            feature=feature,
            count=1,
            host_udi="ANY",
            status=status,
            expires_on=expires,
            installed_on=installed_on,
        )
        made.append(line)
        return line

    return make


# --- licenses -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "activated"),
    [
        ({}, True),  # uploaded and verified: the configure job installs it first
        ({"status": LicenseStatus.INSTALLED, "installed_here": True}, True),
        ({"expires_in_days": 30}, True),
        ({"expires_in_days": -1}, False),  # expired yesterday
        ({"status": LicenseStatus.REMOVED}, False),
        ({"feature": "CAS_ELEMENTS"}, False),  # not an activation license
        ({"on_other": True}, False),  # another appliance's file
        ({"status": LicenseStatus.INSTALLED, "installed_here": False}, False),  # installed elsewhere
    ],
    ids=[
        "verified",
        "installed",
        "expires-later",
        "expired",
        "removed",
        "other-feature",
        "other-file",
        "installed-elsewhere",
    ],
)
def test_a_virtual_appliance_is_activated_only_by_its_own_live_activation_license(
    make_appliance, license_line, line, activated
):
    # Given a VA and one license line as described
    va = make_appliance(name="va1", device_type="VA-High")
    other = make_appliance(name="va2", device_type="VA-High")
    line = dict(line)
    installed_here = line.pop("installed_here", None)
    owner = other if line.pop("on_other", False) else va
    if installed_here is not None:
        line["installed_on"] = va if installed_here else other
    license_line(owner, line.pop("feature", "MSE_ACTIVATION"), **line)

    # When the portal asks whether the VA is activated (as the pairing rules do)
    # Then the answer follows the line
    assert selectors.appliance_is_activated(va) is activated
    assert selectors.node_facts(va).activated is activated


def test_license_files_are_newest_first_with_their_lines_in_three_queries_at_most(
    make_appliance, license_line, django_assert_max_num_queries
):
    # Given several files on two appliances, some installed
    first, second = make_appliance(name="lf1"), make_appliance(name="lf2")
    lines = [license_line(first, "CAS_ELEMENTS", status=LicenseStatus.INSTALLED, installed_on=first) for _ in range(4)]
    lines += [license_line(second, "CAS_ELEMENTS") for _ in range(3)]

    # When the licenses page reads them, lines and installed appliances included
    with django_assert_max_num_queries(3):
        files = selectors.license_files()
        seen = [
            (
                f.appliance.name,
                f.uploaded_by,
                [(line.feature, line.installed_on and line.installed_on.name) for line in f.licenses.all()],
            )
            for f in files
        ]
    only_first = selectors.license_files(appliance=first)

    # Then every file is there, newest first, and the filter keeps one appliance's files
    assert [f.pk for f in files] == sorted((line.source_file_id for line in lines), reverse=True)
    assert seen[0] == ("lf2", None, [("CAS_ELEMENTS", None)]) and seen[-1] == ("lf1", None, [("CAS_ELEMENTS", "lf1")])
    assert {f.appliance_id for f in only_first} == {first.pk} and len(only_first) == 4


# --- lists ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filters", "names"),
    [
        ({"q": "p0"}, ["p01", "p02", "p03"]),
        ({"q": "127.73.3."}, ["s01", "s03"]),  # by HM IP prefix
        ({"q": "127.73.2.2"}, ["p02"]),  # by VIP
        ({"device_type": "3310"}, ["p03"]),
        ({"reachability": "unreachable"}, ["p02"]),
        ({"paired": "yes"}, ["p01", "p02", "p03"]),
        ({"paired": "secondary"}, ["s01", "s03"]),
        ({"paired": "no"}, ["lonely"]),
    ],
    ids=["name", "hm-ip", "vip", "type", "reachability", "primaries", "secondaries", "unpaired"],
)
def test_the_appliance_filters_select_the_right_rows(ha_pair_factory, make_appliance, filters, names):
    # Given pairs p01→s01 and p02→s01 (one secondary backing two), a 3310 pair, and one unpaired node
    s01 = ha_pair_factory(1).secondary
    ha_pair_factory(2, secondary=s01)
    ha_pair_factory(3, primary_type="3310")
    make_appliance(name="lonely", hm_ip="127.73.9.9")
    Appliance.objects.filter(name="p02").update(reachability="unreachable")

    # When the list is filtered
    found = selectors.appliance_filtered(**filters)

    # Then exactly the matching appliances are selected
    assert sorted(found.values_list("name", flat=True)) == names


def test_the_appliance_lists_cost_the_same_queries_at_any_size(
    ha_pair_factory, make_appliance, django_assert_num_queries
):
    # Given a secondary backing two primaries, and a larger fleet of unpaired nodes
    s01 = ha_pair_factory(1).secondary
    ha_pair_factory(2, secondary=s01)
    for n in range(12):
        make_appliance(name=f"u{n:02d}", hm_ip=f"127.73.8.{n + 1}")

    def page(**kwargs):
        rows = selectors.appliance_page(selectors.appliance_filtered(), **kwargs)
        return [(a["name"], a["secondary"], a["backs"]) for a in rows]

    # When the screen reads a small page and a large page, with each row's pairs, and the
    # API reads its rows
    with django_assert_num_queries(2) as small:
        first = page(limit=3)
    with django_assert_num_queries(2) as large:
        everything = page(limit=100, sort="name", descending=True)
    with django_assert_num_queries(1):
        api_rows = [(row.appliance.name, row.secondary_name) for row in selectors.appliance_rows(limit=4)]

    # Then the rows are sorted as asked, each with its pairs, at the same cost whatever the size
    assert first == [("p01", "s01", []), ("p02", "s01", []), ("s01", None, ["p01", "p02"])]
    assert [row[0] for row in everything] == sorted((row[0] for row in everything), reverse=True)
    assert len(everything) == 15 and len(small.captured_queries) == len(large.captured_queries)
    assert api_rows == [("p01", "s01"), ("p02", "s01"), ("s01", None), ("u00", None)]


def test_the_pair_of_an_appliance_and_the_overview_of_secondaries(
    ha_pair_factory, make_appliance, django_assert_num_queries
):
    # Given s01 backing p01 (slot 1) and p02 (slot 2), s03 backing p03, and an unpaired appliance
    first = ha_pair_factory(1)
    second = ha_pair_factory(2, secondary=first.secondary)
    ha_pair_factory(3)
    alone = make_appliance(name="alone")

    # When each appliance's pair is looked up (one query, related rows included), and the
    # N:1 overview reads a page (two queries)
    with django_assert_num_queries(1):
        of_secondary = selectors.pair_for(first.secondary)
        assert of_secondary.primary.name == "p01"
    of_primaries = [selectors.pair_for(Appliance.objects.get(name=name)).pk for name in ("p01", "p02")]
    with django_assert_num_queries(2):
        overview = [
            (secondary["name"], [pair["primary_name"] for pair in pairs])
            for secondary, pairs in selectors.ha_overview(selectors.ha_overview_secondaries())
        ]

    # Then a primary finds its own pair, a secondary the one in its first slot, the unpaired none;
    # and each secondary lists its primaries by slot
    assert (of_secondary.pk, of_secondary.slot, second.slot) == (first.pk, 1, 2)
    assert of_primaries == [first.pk, second.pk]
    assert selectors.pair_for(alone) is None
    assert overview == [("s01", ["p01", "p02"]), ("s03", ["p03"])]


# --- switchover / failback pre-flight -------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "label", "phrase"),
    [
        ({"maintenance": True, "maintenance_reason": "cabling"}, "Not in maintenance", "maintenance (cabling)"),
        ({"secondary_reachable": False}, "Both nodes reachable", "s01 is not answering the portal."),
        ({"switch_allowed_at": "future"}, "Stabilisation window over", "switchover is allowed from"),
        ({"primary_generation": 2}, "Generation agreed", "portal 1, p01 2, s01 1"),
        (
            {"secondary_state": "TERMINATED"},
            "Primary active, secondary standing by",
            "they are PRIMARY_ACTIVE and TERMINATED",
        ),
        ({"heartbeat": "down"}, "Heartbeats up", "Heartbeats are down"),
        ({"sync_percent": 80}, "Data replication in sync", "(80% synchronised)"),
        ({"job": True}, "No other job running", "is still running on this pair"),
    ],
    ids=["maintenance", "unreachable", "window", "generation", "states", "heartbeats", "sync", "job"],
)
def test_each_switchover_precondition_refuses_with_its_own_reason(ha_pair, change, label, phrase):
    # Given an Active pair with one thing wrong
    change = dict(change)
    if change.pop("job", False):
        Job.objects.create(kind=JobKind.UPDATE_HA, pair=ha_pair, status=JobStatus.RUNNING)
    if change.get("switch_allowed_at") == "future":
        change["switch_allowed_at"] = timezone.now() + timedelta(minutes=20)
    HAPair.objects.filter(pk=ha_pair.pk).update(**change)
    pair = HAPair.objects.select_related("primary", "secondary").get(pk=ha_pair.pk)

    # When the switchover pre-flight runs
    preflight = selectors.preflight(pair, "switchover")

    # Then exactly that check fails, and the refusal says why
    assert not preflight.allowed
    assert [check.label for check in preflight.checks if not check.ok] == [label]
    assert phrase in preflight.refusal


def test_the_preflight_allows_a_switchover_of_a_healthy_pair_and_a_failback_after_it(ha_pair, ha_pair_factory):
    # Given an Active pair, and a pair after a switchover with the primary's services still stopped
    failed_over = ha_pair_factory(4, **{**FAILED_OVER, "primary_services_up": False})

    # When the pre-flights run
    switchover = selectors.preflight(ha_pair, "switchover")
    failback = selectors.preflight(failed_over, "failback")
    no_failback = selectors.preflight(ha_pair, "failback")

    # Then both may go ahead, each told what will happen; a pair that never failed over may not fail back
    assert switchover.allowed and switchover.refusal == ""
    assert any("s01 starts the instance" in line and "127.73.2.1" in line for line in switchover.consequences)
    assert any("from 1 to 2" in line for line in switchover.consequences)
    assert failback.allowed
    assert failback.consequences[0] == "The services on p04 are started first; it comes back as TERMINATED."
    assert [check.label for check in no_failback.checks if not check.ok] == ["Secondary in charge, primary back up"]


@pytest.mark.parametrize(
    ("state", "advice"),
    [
        (HEALTHY, "The pair is as it was before: p05 is in charge and s05 stands by; nothing needs undoing. "
                  "Run the switchover again when ready."),
        ({**FAILED_OVER}, "s05 is in charge (FAILOVER_ACTIVE): the switchover took effect on the agents."),
        ({**HEALTHY, "primary_state": "TERMINATED", "primary_services_up": False},
         "Nobody is in charge: the services on p05 are stopped and s05 has not taken over. Start the services on "
         "p05 (Start services)"),
        ({**HEALTHY, "primary_state": "FAILOVER_INVOKED", "secondary_state": "FAILOVER_INVOKED"},
         "The agents are still between states (p05 FAILOVER_INVOKED, s05 FAILOVER_INVOKED)"),
    ],
    ids=["untouched", "took-effect", "nobody-in-charge", "in-transit"],
)  # fmt: skip
def test_after_a_cancelled_switchover_the_preflight_says_what_ran_and_what_to_do_now(ha_pair_factory, state, advice):
    # Given a switchover cancelled after its first step, the pair then as the poller found it
    from hapairs import jobs

    pair = ha_pair_factory(5, **state)
    job = Job.objects.create(pair=pair, kind=JobKind.SWITCHOVER, status=JobStatus.CANCELLED, steps_done=["a"])
    steps = [jobs.Step("a", print, "Stop the primary's services"), jobs.Step("b", print, "Take over the VIP")]
    job.error = jobs._cancelled_summary(job, steps, "alice")
    job.save(update_fields=["error"])

    # When the operator opens the pre-flight check
    lines = selectors.preflight(pair, "switchover").after_cancel

    # Then it says what the job did and did not do, and what can be done now
    assert lines[0] == (
        f"Switchover (job #{job.pk}) was cancelled. Cancelled by alice. Done: Stop the primary's services. "
        "Not done: Take over the VIP."
    )
    assert lines[1].startswith(advice), lines[1]
    # and says nothing once a later job ran
    Job.objects.create(pair=pair, kind=JobKind.SWITCHOVER, status=JobStatus.SUCCEEDED)
    assert selectors.preflight(pair, "switchover").after_cancel == []


# --- status ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "sentence", "moving"),
    [
        ({"status_updated_at": None}, "High Availability configuration is being created", True),
        ({**HEALTHY}, "Active", False),
        (
            {**HEALTHY, "sync_percent": 40, "replication": "setting_up"},
            "synchronization in progress (40% complete)",
            True,
        ),
        ({**FAILED_OVER}, "Instance is in failover active state", False),
        ({**HEALTHY, "primary_state": "FAILOVER_INVOKED"}, "FAILOVER_INVOKED / SECONDARY_ACTIVE", True),
        ({**HEALTHY, "status_text": "What the agent says"}, "What the agent says", False),
        ({**HEALTHY, "job": True}, "Active", True),  # a job queued: the screen follows it
    ],
    ids=["new", "active", "syncing", "failed-over", "in-transition", "agents-words", "job-queued"],
)
def test_the_status_line_and_whether_the_screen_polls(ha_pair_factory, status, sentence, moving):
    # Given a pair in the given state (polled a moment ago unless said otherwise)
    status = dict(status)
    queued = status.pop("job", False)
    pair = ha_pair_factory(6, **{"status_updated_at": timezone.now(), **status})
    if queued:
        Job.objects.create(kind=JobKind.SWITCHOVER, pair=pair)

    # When the status screen reads it
    # Then the Status line and "something is moving" follow
    assert sentence in selectors.pair_status_sentence(pair)
    assert selectors.pair_in_progress(pair) is moving


def test_the_status_screen_reads_the_newest_events_with_who_asked_and_the_heartbeat_chart(
    ha_pair, operator_user, django_assert_num_queries
):
    # Given a pair with many events, the newest caused by an operator's job,
    base = timezone.now() + timedelta(seconds=1)  # after the pair's own "recorded" event
    for minute in range(8):
        HAEvent.objects.create(
            pair=ha_pair,
            description=f"event {minute}",
            generated_by="Primary",
            timestamp=base + timedelta(minutes=minute),
        )
    job = Job.objects.create(
        kind=JobKind.SWITCHOVER, pair=ha_pair, requested_by=operator_user, reason="patching", status=JobStatus.SUCCEEDED
    )
    HAEvent.objects.create(
        pair=ha_pair,
        job=job,
        code="failover_active",
        description="Instance is in failover active state",
        generated_by="Secondary",
        timestamp=base + timedelta(minutes=30),
    )

    # and seven heartbeat samples, a minute apart
    for minute in range(7):
        HeartbeatSample.objects.create(pair=ha_pair, at=base - timedelta(minutes=10 - minute), mean_ms=float(minute))

    # When the status screen reads the status with the five newest events, and the last three samples
    with django_assert_num_queries(1):
        status = selectors.pair_status(ha_pair, events_limit=5)
    history = selectors.heartbeat_history(ha_pair, limit=3)

    # Then the events are newest first, the newest naming the requester and the reason
    assert [event["description"] for event in status["events"]] == [
        "Instance is in failover active state",
        "event 7",
        "event 6",
        "event 5",
        "event 4",
    ]
    newest = status["events"][0]
    assert (newest["requested_by"], newest["reason"]) == ("operator1", "patching")
    assert (status["primary"], status["secondary"], status["vip"], status["status"]) == (
        "p01",
        "s01",
        "127.73.2.1",
        "Active",
    )
    # and the chart gets the three newest samples, oldest first
    assert [ms for _, ms in history] == [4.0, 5.0, 6.0]


# --- an appliance's own command output ------------------------------------------------------
def test_an_appliances_gethainfo_is_read_from_its_agent_or_says_why_not(tmp_path, settings, make_appliance):
    # Given a real agent for one appliance, an appliance whose agent is down, and one whose
    # agent answers something that cannot be shown
    settings.AGENT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    net = fresh_subnet(73, settings.AGENT_PORT)
    farm = AgentFarm(
        tmp_path,
        node_toml("mse-out", "3355", "primary", f"{net}.2", "pw-out", vip=f"{net}.1"),
        port=settings.AGENT_PORT,
    ).start()
    odd = ScriptedAgent(
        f"{net}.4", settings.AGENT_PORT, "pw-odd", {("GET", protocol.PATH_HA_INFO): [Reply(200, {"peers": "none"})]}
    ).start()
    up = make_appliance(name="mse-out", hm_ip=f"{net}.2", vip=f"{net}.1", vip_prefixlen=24, password="pw-out")
    down = make_appliance(name="mse-down", hm_ip=f"{net}.3")
    strange = make_appliance(name="mse-odd", hm_ip=f"{net}.4", password="pw-odd")
    try:
        # When the page asks each for its gethainfo
        text, status = selectors.appliance_output(up, "hainfo")
        down_text, down_status = selectors.appliance_output(down, "hainfo")
        odd_text, odd_status = selectors.appliance_output(strange, "hainfo")
    finally:
        odd.stop()
        farm.stop()

    # Then the first is the agent's own text, the others a sentence with the right status
    assert status == 200, text
    assert text.startswith("Health Monitor is running")
    assert f"Health Monitor IP Address: {net}.2" in text and "Number of paired peers: 0" in text
    assert down_status == 503 and down_text.startswith("Cannot read it from mse-down now:")
    assert (odd_status, odd_text) == (502, "mse-odd answered with something that cannot be shown as text.")
    with pytest.raises(ValueError):
        selectors.appliance_output(up, "rm -rf")
