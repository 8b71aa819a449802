"""Every read the pages, the API and the services need, with bounded query counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Case, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from hapairs import agent_client, rules
from hapairs.choices import ACTIVE_JOB_STATUSES, HAState, JobStatus, LicenseStatus, LinkStatus, ReplicationStatus
from hapairs.crypto import SecretUnreadable
from hapairs.models import Appliance, HAEvent, HAPair, HeartbeatSample, Job, License, LicenseFile, Tally
from hapairs.selectors.lists import (  # noqa: F401  (read as selectors.<name>, like the rest)
    APPLIANCE_LIST_FIELDS,
    APPLIANCE_SORTS,
    EVENT_CAUSE,
    EVENT_FIELDS,
    EVENTS_ORDERING,
    HA_OVERVIEW_FIELDS,
    HA_OVERVIEW_ORDERING,
    HA_OVERVIEW_PAIR_FIELDS,
    appliance_filtered,
    appliance_ordering,
    appliance_page,
    appliance_seek,
    appliance_total,
    ha_overview,
    ha_overview_secondaries,
    ha_overview_seek,
    pair_events_seek,
    tallies_recount,
    tally,
)
from hapairs.selectors.paging import Page, PageWhere, seek_fields, seek_key, seek_key_parse, seek_page  # noqa: F401
from nodeagent import output, protocol

ACTIVATION_FEATURE = "MSE_ACTIVATION"


def appliance_is_activated(appliance: Appliance) -> bool:
    """A VA is activated while it holds an unexpired activation license: installed, or
    uploaded and verified with its install still pending (the configure job installs
    pending licenses first, so an operator can upload the activation license and pair in one go)."""
    today = timezone.localdate()
    return (
        License.objects.filter(feature=ACTIVATION_FEATURE)
        .filter(
            Q(status=LicenseStatus.INSTALLED, installed_on=appliance)
            | Q(status=LicenseStatus.VERIFIED, source_file__appliance=appliance)
        )
        .filter(Q(expires_on__isnull=True) | Q(expires_on__gte=today))
        .exists()
    )


def license_files(*, appliance: Appliance | None = None, limit: int = 500) -> list[LicenseFile]:
    """Uploaded license files, newest first, with their lines (three queries, whatever the count)."""
    queryset = LicenseFile.objects.select_related("appliance", "uploaded_by").prefetch_related("licenses__installed_on")
    if appliance is not None:
        queryset = queryset.filter(appliance=appliance)
    return list(queryset.order_by("-uploaded_at", "-pk")[:limit])


def node_facts(appliance: Appliance) -> rules.NodeFacts:
    return rules.NodeFacts(
        name=appliance.name,
        device_type=appliance.device_type,
        version=appliance.version,
        hm_ip=appliance.hm_ip,
        vip=appliance.vip,
        vip_prefixlen=appliance.vip_prefixlen,
        activated=appliance_is_activated(appliance) if appliance.is_virtual else True,
        role=appliance.role,
    )


# --- switchover / failback pre-flight ------------------------------------------------
@dataclass(frozen=True)
class Check:
    label: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Preflight:
    action: str  # "switchover" | "failback"
    checks: list[Check]
    consequences: list[str]
    # the pair's last job was cancelled: what it left done and undone, and what to do now
    after_cancel: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def refusal(self) -> str:
        failed = [check.detail for check in self.checks if not check.ok]
        return " ".join(failed)


def preflight(pair: HAPair, action: str, *, now=None) -> Preflight:
    """What a switchover or failback would do now, and which checks pass (spec §5 rules)."""
    now = now or timezone.now()
    p, s = pair.primary.name, pair.secondary.name
    running = Job.objects.filter(pair=pair, status__in=ACTIVE_JOB_STATUSES).first()
    checks = [
        Check(
            "No other job running",
            running is None,
            ""
            if running is None
            else f"{running.get_kind_display()} (job #{running.pk}) is still running on this pair.",
        ),
        Check(
            "Not in maintenance",
            not pair.maintenance,
            ""
            if not pair.maintenance
            else f"The pair is in maintenance ({pair.maintenance_reason}); end maintenance first.",
        ),
        Check(
            "Both nodes reachable",
            pair.primary_reachable and pair.secondary_reachable,
            ""
            if pair.primary_reachable and pair.secondary_reachable
            else f"{p if not pair.primary_reachable else s} is not answering the portal.",
        ),
    ]
    window_ok = pair.switch_allowed_at is None or pair.switch_allowed_at <= now
    checks.append(
        Check(
            "Stabilisation window over",
            window_ok,
            ""
            if window_ok
            else (
                f"The database needs time to stabilise after the last {'failover' if action == 'failback' else 'failback'}: "
                f"{action} is allowed from {timezone.localtime(pair.switch_allowed_at):%Y-%m-%d %H:%M:%S %Z}."
            ),
        )
    )
    generation_ok = pair.primary_generation == pair.secondary_generation == pair.generation or (
        action == "failback" and pair.secondary_generation == pair.generation
    )
    checks.append(
        Check(
            "Generation agreed",
            generation_ok,
            ""
            if generation_ok
            else (
                f"The nodes disagree about who is in charge (generation: portal {pair.generation}, "
                f"{p} {pair.primary_generation}, {s} {pair.secondary_generation}); refresh the status first."
            ),
        )
    )
    if action == "switchover":
        states_ok = pair.primary_state == HAState.PRIMARY_ACTIVE and pair.secondary_state == HAState.SECONDARY_ACTIVE
        checks += [
            Check(
                "Primary active, secondary standing by",
                states_ok,
                ""
                if states_ok
                else (
                    f"A switchover needs {p} PRIMARY_ACTIVE and {s} SECONDARY_ACTIVE; "
                    f"they are {pair.primary_state} and {pair.secondary_state}."
                ),
            ),
            Check(
                "Heartbeats up",
                pair.heartbeat == LinkStatus.UP,
                "" if pair.heartbeat == LinkStatus.UP else "Heartbeats are down between the nodes.",
            ),
            Check(
                "Data replication in sync",
                pair.replication == ReplicationStatus.UP and pair.sync_percent >= 100,
                ""
                if pair.replication == ReplicationStatus.UP and pair.sync_percent >= 100
                else (
                    f"The secondary is not in sync yet ({pair.sync_percent}% synchronised); a switchover now could lose data."
                ),
            ),
        ]
        consequences = [
            f"The services on {p} are stopped (as if the primary had failed).",
            f"{s} starts the instance {pair.instance_db_name} and takes over the virtual IP {pair.primary.vip}.",
            f"The pair's generation goes from {pair.generation} to {pair.generation + 1}; {p} will refuse to serve the VIP.",
            "Failback will be refused for the stabilisation window (30 minutes by default).",
        ]
    else:
        primary_back = pair.primary_state == HAState.TERMINATED or not pair.primary_services_up
        states_ok = pair.secondary_state == HAState.FAILOVER_ACTIVE and primary_back
        checks.append(
            Check(
                "Secondary in charge, primary back up",
                states_ok,
                ""
                if states_ok
                else (
                    f"A failback needs {s} FAILOVER_ACTIVE and {p} TERMINATED (up again); "
                    f"they are {pair.secondary_state} and {pair.primary_state}."
                ),
            )
        )
        consequences = (
            [] if pair.primary_services_up else [f"The services on {p} are started first; it comes back as TERMINATED."]
        )
        consequences += [
            f"The database is copied back from {s} to {p}.",
            f"{p} takes the virtual IP {pair.primary.vip} back; {s} returns to standing by.",
            f"The pair's generation goes from {pair.generation} to {pair.generation + 1}.",
            "Switchover will be refused for the stabilisation window (30 minutes by default).",
        ]
    return Preflight(action=action, checks=checks, consequences=consequences, after_cancel=after_cancel(pair))


def after_cancel(pair: HAPair) -> list[str]:
    """When the pair's last job was cancelled: what it did, and what the operator can do now,
    read from the pair's state as the poller last saw it (a step that had asked an agent may
    have acted there). Empty otherwise."""
    last = Job.objects.filter(pair=pair).order_by("-pk").first()
    if last is None or last.status != JobStatus.CANCELLED:
        return []
    p, s, kind = pair.primary.name, pair.secondary.name, last.get_kind_display()
    lines = [f"{kind} (job #{last.pk}) was cancelled. {last.error.split('. A step')[0].rstrip('.')}."]
    primary, secondary = pair.primary_state, pair.secondary_state
    in_transit = {HAState.FAILOVER_INVOKED, HAState.FAILBACK_ACTIVE, HAState.FAILBACK_COMPLETE}
    if primary in in_transit or secondary in in_transit:
        lines.append(
            f"The agents are still between states ({p} {primary}, {s} {secondary}): they finish or undo the "
            "step by themselves. Refresh the status in a few seconds before acting again."
        )
    elif primary == HAState.PRIMARY_ACTIVE and secondary == HAState.SECONDARY_ACTIVE:
        lines.append(
            f"The pair is as it was before: {p} is in charge and {s} stands by; nothing needs undoing. "
            f"Run the {kind.lower()} again when ready."
        )
    elif secondary == HAState.FAILOVER_ACTIVE:
        lines.append(
            f"{s} is in charge (FAILOVER_ACTIVE): the switchover took effect on the agents. Fail back once "
            f"{p} is up again (TERMINATED) and the stabilisation window is over, or leave {s} in charge."
        )
    elif not pair.primary_services_up and secondary != HAState.FAILOVER_ACTIVE:
        lines.append(
            f"Nobody is in charge: the services on {p} are stopped and {s} has not taken over. Start the "
            f"services on {p} (Start services) to bring the primary back, or run the switchover again to "
            f"hand over to {s}."
        )
    else:
        lines.append(
            f"{p} is {primary} and {s} {secondary}. Refresh the status and read the Events Log before acting again."
        )
    return lines


# --- lists and status -----------------------------------------------------------------
@dataclass(frozen=True)
class ApplianceRow:
    appliance: Appliance
    secondary_name: str | None


def appliance_rows(*, offset: int = 0, limit: int = 100, order: str = "name") -> list[ApplianceRow]:
    """The Mobility Services Engines list: one query, whatever the fleet size."""
    queryset = (
        Appliance.objects.defer("password_ciphertext")
        .select_related("ha_pair_as_primary__secondary")
        .order_by(order, "pk")[offset : offset + limit]
    )
    rows = []
    for appliance in queryset:
        pair = getattr(appliance, "ha_pair_as_primary", None)
        rows.append(ApplianceRow(appliance=appliance, secondary_name=pair.secondary.name if pair else None))
    return rows


def pair_status_sentence(pair: HAPair) -> str:
    """The status screen's Status line, in the seed's words."""
    if pair.status_text:
        return pair.status_text
    if pair.status_updated_at is None:
        return "High Availability configuration is being created at the Primary and Secondary servers."
    if pair.secondary_state == HAState.FAILOVER_ACTIVE:
        return protocol.EventCode.FAILOVER_ACTIVE.text
    if pair.replication == ReplicationStatus.SETTING_UP or pair.sync_percent < 100:
        return f"{protocol.EventCode.SYNC_IN_PROGRESS.text} ({pair.sync_percent}% complete)"
    if pair.primary_state == HAState.PRIMARY_ACTIVE and pair.secondary_state == HAState.SECONDARY_ACTIVE:
        return protocol.EventCode.ACTIVE.text
    return f"{pair.primary_state} / {pair.secondary_state}"


@dataclass(frozen=True)
class Link:
    """One line of the status screen's reachability matrix."""

    between: str
    status: str  # up / down / unknown
    note: str = ""


@dataclass(frozen=True)
class PairNetwork:
    links: list[Link]
    witnessed: bool  # the pair has witnesses (else a partition can split it)
    fenced: bool
    verdict: str  # the witnesses' last word on a takeover, when there is one


NO_WITNESS_RISK = (
    "No witness: if the network between the nodes fails while both still run, each may think "
    "the other dead and both serve the VIP (split brain). List witnesses for this pair on its "
    "Configure High Availability Parameters screen."
)


def pair_network(pair: HAPair) -> PairNetwork:
    """The reachability matrix (from the row: no query): primary↔secondary on each heartbeat
    path, each node↔each witness, portal↔each node; the witnesses' verdict and any fencing."""
    p, s = pair.primary.name, pair.secondary.name
    links = []
    paths = pair.secondary_paths or pair.primary_paths
    names = {"hm": "Health Monitor network", "direct": "direct connect"}
    for path in paths or {"hm": pair.heartbeat}:
        links.append(Link(f"{p} ↔ {s} · {names.get(path, path)}", paths.get(path, pair.heartbeat)))
    for node, answers in ((p, pair.primary_witnesses), (s, pair.secondary_witnesses)):
        for answer in answers:
            # a refusal is an answer: the witness is reachable, its verdict goes in the note
            reached = answer["ok"] or "refused" in answer.get("answer", "")
            links.append(Link(f"{node} ↔ witness {answer['address']}", "up" if reached else "down",
                              answer.get("answer", "")))  # fmt: skip
        reported = {answer["address"] for answer in answers}
        for address in pair.witness_addresses:  # configured by the portal, not answered yet
            if address not in reported:
                links.append(Link(f"{node} ↔ witness {address}", "unknown", "configured; no answer reported yet"))
    links.append(Link(f"portal ↔ {p}", "up" if pair.primary_reachable else "down"))
    links.append(Link(f"portal ↔ {s}", "up" if pair.secondary_reachable else "down"))
    refusals = [a["answer"] for a in pair.secondary_witnesses if not a["ok"] and "takeover" in a.get("answer", "")]
    return PairNetwork(
        links=links,
        witnessed=bool(pair.witness_addresses or pair.primary_witnesses or pair.secondary_witnesses),
        fenced=pair.primary_fenced,
        verdict=refusals[0] if refusals else "",
    )


def pair_status(pair: HAPair, *, events_limit: int = 50) -> dict:
    """Current High Availability Status, as data (the API's answer and the page's context)."""
    events = (
        HAEvent.objects.filter(pair=pair)
        .order_by("-timestamp", "-pk")
        .values(*EVENT_FIELDS, **EVENT_CAUSE)[:events_limit]
    )
    return {
        "primary": pair.primary.name,
        "secondary": pair.secondary.name,
        "primary_hm_ip": pair.primary.hm_ip,
        "secondary_hm_ip": pair.secondary.hm_ip,
        "vip": pair.primary.vip,
        "status": pair_status_sentence(pair),
        "heartbeats": pair.get_heartbeat_display(),
        "data_replication": pair.get_replication_display(),
        "sync_percent": pair.sync_percent,
        "mean_heartbeat_response_ms": pair.mean_heartbeat_ms,
        "primary_state": pair.primary_state,
        "secondary_state": pair.secondary_state,
        "primary_reachable": pair.primary_reachable,
        "secondary_reachable": pair.secondary_reachable,
        "generation": pair.generation,
        "split_brain": pair.split_brain,
        "certificate_problems": [p for node in (pair.primary, pair.secondary) if (p := certificate_problem(node))],
        "failover_type": pair.get_failover_type_display(),
        "failback_type": pair.get_failback_type_display(),
        "long_failover_wait": pair.failover_wait,
        "witnesses": pair.witness_addresses,  # the portal's; the password is never shown
        "witness_mode": pair.witness_mode,
        "instance_database": pair.instance_db_name,
        "switch_allowed_at": pair.switch_allowed_at,
        "maintenance": {
            "on": pair.maintenance,
            "by": pair.maintenance_by.get_username() if pair.maintenance and pair.maintenance_by else None,
            "reason": pair.maintenance_reason,
            "since": pair.maintenance_since,
        },
        "status_updated_at": pair.status_updated_at,
        "events": list(events),
    }


# --- the operator's screens: selectors.lists (seek pages, selectors.paging) ------------------
def pairs_of(appliance: Appliance | int | Subquery) -> QuerySet[HAPair]:
    """Every pair the appliance is in: the one it is primary of first, then those it backs as
    a secondary, by slot. THE lookup of "the HA pair of an appliance"; one query."""
    return (
        HAPair.objects.select_related("primary", "secondary", "maintenance_by")
        .filter(Q(primary=appliance) | Q(secondary=appliance))
        .order_by(Case(When(primary=appliance, then=Value(0)), default=Value(1), output_field=IntegerField()), "slot")
    )


def pair_for(appliance: Appliance | int | Subquery) -> HAPair | None:
    """The pair an appliance is primary of, else the first it backs as a secondary."""
    return pairs_of(appliance).first()


def pair_for_name(name: str) -> HAPair | None:
    """``pair_for`` the appliance called ``name``, with ``events_total`` (the tally of its
    events), in one query: the status screen's, one round trip instead of three."""
    events = Tally.objects.filter(name=Tally.PAIR_EVENTS, subject_id=OuterRef("pk")).values("value")[:1]
    found = pairs_of(Subquery(Appliance.objects.filter(name=name).values("pk")))
    return found.annotate(events_total=Coalesce(Subquery(events), 0)).first()


def pair_in_progress(pair: HAPair, *, job_active: bool | None = None) -> bool:
    """Is something moving (a job, a synchronisation, a transition)? Then the screens poll.
    ``job_active``: whether the pair has an active job, when the caller knows already."""
    settled = {HAState.PRIMARY_ACTIVE, HAState.SECONDARY_ACTIVE, HAState.FAILOVER_ACTIVE, HAState.TERMINATED}
    if job_active is None:
        job_active = Job.objects.filter(pair=pair, status__in=("pending", "running")).exists()
    if job_active:
        return True
    if pair.status_updated_at is None or pair.sync_percent < 100:
        return True
    return pair.primary_state not in settled or pair.secondary_state not in settled


def heartbeat_history(pair: HAPair, *, limit: int = 60) -> list[tuple]:
    """The recent mean heartbeat samples of a pair, oldest first: [(at, ms)]."""
    rows = HeartbeatSample.objects.filter(pair=pair).order_by("-at").values_list("at", "mean_ms")[:limit]
    return list(reversed(rows))


# --- an appliance's own command output, read from its agent now -------------------------------
AGENT_OUTPUTS = ("hainfo", "serverinfo")


def appliance_output(appliance: Appliance, what: str) -> tuple[str, int]:
    """Its `gethainfo` or `getserverinfo` text, and an HTTP status: 200, or 503 (cannot be
    read now) / 502 (an answer that cannot be shown) with a sentence instead of the text."""
    if what == "hainfo":
        path, render = protocol.PATH_HA_INFO, lambda d: output.format_hainfo(d, running=bool(d.get("running", True)))
    elif what == "serverinfo":
        path = protocol.PATH_SERVER_INFO
        render = lambda d: output.format_serverinfo(d, running=bool(d.get("services_running", True)))  # noqa: E731
    else:
        raise ValueError(f"what must be one of {AGENT_OUTPUTS}, not {what!r}")
    try:
        return render(agent_client.call(agent_client.target_for(appliance), "GET", path)), 200
    except agent_client.AgentError as exc:
        return f"Cannot read it from {appliance.name} now: {exc.message}", 503
    except SecretUnreadable as exc:
        return str(exc), 503
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"{appliance.name} answered with something that cannot be shown as text.", 502


def certificate_problem(appliance: Appliance) -> str:
    """Why the portal refuses this appliance's agent now ("" when it does not): it presented
    another TLS certificate than the pinned one. The agent client's own sentence."""
    if not appliance.tls_presented:
        return ""
    return agent_client.AgentCertificateChanged(
        appliance.name, appliance.hm_ip, expected=appliance.tls_fingerprint, got=appliance.tls_presented
    ).message
