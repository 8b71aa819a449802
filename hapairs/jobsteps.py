"""The steps of each job kind, run against the agents (see docs/agent-api.md).

Every mutating request carries the job's step key as its Idempotency-Key, so a step
re-run after a crash gets the agent's first answer instead of acting twice. Waiting
steps poll the agents through the same poller the beat task uses, so what the job
sees is exactly what the pages show.

``STEPS`` holds each kind's steps as data; ``HapairsConfig.ready()`` hands them to the
runner (``register_all``), so ``jobs.run`` finds them in every process, whoever imports what.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from hapairs import agent_client, polling
from hapairs.choices import EventCode, HAState, JobKind, LicenseStatus, LinkStatus, ReplicationStatus
from hapairs.jobs import JobContext, Step, StepFailed, register
from hapairs.models import Appliance, HAPair, LicenseFile
from hapairs.services._common import event_record
from hapairs.services.licenses import license_features, license_installed_record, license_removed_record
from hapairs.services.pairs import ha_pair_delete_record
from nodeagent import protocol

STEPS: dict[str, list[Step]] = {}  # job kind → its steps in order (filled below, next to each kind's functions)

TRAP_DESTINATIONS_MAX = 8  # what an agent keeps (nodeagent.operator_api)


def _pair(ctx: JobContext) -> HAPair:
    if ctx.job.pair_id is None:
        raise StepFailed("The HA pair of this job no longer exists.")
    return HAPair.objects.select_related("primary", "secondary").get(pk=ctx.job.pair_id)


def _mode(value: str) -> str:
    return "Automatic" if value == "automatic" else "Manual"


def _peer_block(node: Appliance, pair: HAPair) -> dict:
    """What one node must know about the other to pair with it."""
    block = {
        "name": node.name,
        "hm_ip": node.hm_ip,
        "password": node.get_password(),
        "version": node.version,
        "udi": node.udi,
        "device_type": node.device_type,
        "port": settings.AGENT_PORT,
    }
    if node.pk == pair.primary_id:
        block["vip"] = node.vip
        block["netmask"] = node.netmask
    return block


def _configure_body(pair: HAPair, role: str, **overrides) -> dict:
    other = pair.primary if role == "secondary" else pair.secondary
    values = {
        "failover_type": pair.failover_type,
        "failback_type": pair.failback_type,
        "failover_wait": pair.failover_wait,
        "maintenance": pair.maintenance,
    }
    values.update(overrides)
    return {
        "role": role,
        "peer": _peer_block(other, pair),
        "failover_type": _mode(values["failover_type"]),
        "failback_type": _mode(values["failback_type"]),
        "failover_wait": values["failover_wait"],
        "maintenance": bool(values["maintenance"]),
        "stabilisation_seconds": settings.HA_STABILISATION_SECONDS,
    }


def _post(ctx: JobContext, node: Appliance, path: str, body: dict, *, method: str = "POST") -> dict:
    """One command of a job step: its key, and the cause the agent echoes on its events."""
    return agent_client.call(
        agent_client.target_for(node),
        method,
        path,
        body={**body, "cause": ctx.cause},
        idempotency_key=ctx.idempotency_key,
    )


def _refresh(pair: HAPair) -> HAPair:
    polling.poll([pair.primary_id, pair.secondary_id])
    return HAPair.objects.select_related("primary", "secondary").get(pk=pair.pk)


# --- licenses --------------------------------------------------------------------------
def _job_license_file(ctx: JobContext) -> LicenseFile:
    found = LicenseFile.objects.select_related("appliance").filter(pk=ctx.params.get("license_file")).first()
    if found is None:
        raise StepFailed("The license file of this job no longer exists.")
    return found


def _install_file(ctx: JobContext, license_file: LicenseFile, *, key: str) -> bool:
    """Send one stored file to its appliance's agent, then record its lines INSTALLED.

    Idempotent: a file with no VERIFIED line left (installed, or removed meanwhile) is
    skipped, and a re-sent request carries the same key, so the agent answers as before.
    """
    lines = list(license_file.licenses.all())
    if not any(line.status == LicenseStatus.VERIFIED for line in lines):
        return False
    appliance = license_file.appliance
    reply = agent_client.call(
        agent_client.target_for(appliance),
        "POST",
        protocol.PATH_LICENSES,
        body={"text": license_file.content, "features": license_features(lines), "cause": {**ctx.cause, "key": key}},
        idempotency_key=key,
    )
    agent_id = reply.get("id") if isinstance(reply, dict) else None
    if not isinstance(agent_id, str) or not agent_id:
        raise agent_client.AgentBadReply(f"{appliance.name} installed the license but did not say under which id.")
    license_installed_record(license_file=license_file, agent_license_id=agent_id, job=ctx.job)
    return True


def install_license(ctx: JobContext) -> None:
    _install_file(ctx, _job_license_file(ctx), key=ctx.idempotency_key)


def remove_license_from_agent(ctx: JobContext) -> None:
    license_file = _job_license_file(ctx)
    if not license_file.agent_license_id:  # never installed: the agent has nothing to drop
        return
    path = protocol.PATH_LICENSE.format(license_id=license_file.agent_license_id)
    try:
        _post(ctx, license_file.appliance, path, {}, method="DELETE")
    except agent_client.AgentRejected as exc:
        if exc.status != 404:  # already gone: fine, the step is done
            raise


def record_license_removed(ctx: JobContext) -> None:
    license_removed_record(license_file=_job_license_file(ctx), job=ctx.job)


def install_pending_licenses(ctx: JobContext) -> None:
    """Licenses uploaded but not installed yet on either node (a VA's activation license,
    uploaded just before pairing) reach their agents before HA is configured."""
    pair = _pair(ctx)
    files = (
        LicenseFile.objects.select_related("appliance")
        .filter(appliance_id__in=[pair.primary_id, pair.secondary_id], licenses__status=LicenseStatus.VERIFIED)
        .distinct()
        .order_by("pk")
    )
    for license_file in files:
        _install_file(ctx, license_file, key=f"{ctx.idempotency_key}:{license_file.pk}")


STEPS[JobKind.INSTALL_LICENSE] = [Step("install_license", install_license, "Installing the license on the appliance")]
STEPS[JobKind.REMOVE_LICENSE] = [
    Step("remove_license", remove_license_from_agent, "Removing the license from the appliance"),
    Step("record_removed", record_license_removed, "Recording the removal"),
]


# --- configure ----------------------------------------------------------------------
def configure_secondary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _post(ctx, pair.secondary, protocol.PATH_HA_CONFIGURE, _configure_body(pair, "secondary"))


def configure_primary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _post(ctx, pair.primary, protocol.PATH_HA_CONFIGURE, _configure_body(pair, "primary"))


def set_trap_destinations(ctx: JobContext) -> None:
    """Both agents push their events to the portal from now on."""
    if not settings.INGEST_URL:
        return
    pair = _pair(ctx)
    for node in (pair.primary, pair.secondary):
        target = agent_client.target_for(node)
        current = agent_client.call(target, "GET", protocol.PATH_TRAP_DESTINATIONS)
        urls = [d.get("url") for d in current.get("destinations", []) if isinstance(d, dict) and d.get("url")]
        if settings.INGEST_URL not in urls:
            # the portal first: an agent keeps at most 8, and the portal must hear its events
            kept = [settings.INGEST_URL, *urls][:TRAP_DESTINATIONS_MAX]
            agent_client.call(
                target,
                "PUT",
                protocol.PATH_TRAP_DESTINATIONS,
                body={"urls": kept},
                idempotency_key=f"{ctx.idempotency_key}:{node.pk}",
            )
            dropped = [url for url in urls if url not in kept]
            if dropped:
                event_record(
                    code=EventCode.CONFIG_UPDATED,
                    generated_by="mseportal",
                    appliance=node,
                    pair=pair,
                    job=ctx.job,
                    description="Trap destination replaced by the portal",
                    remarks=f"{node.name} keeps at most {TRAP_DESTINATIONS_MAX} trap destinations; "
                    f"{', '.join(dropped)} made way for the portal ({settings.INGEST_URL}).",
                )


def wait_until_active(ctx: JobContext) -> None:
    """Initial synchronisation: progress follows the agents' sync percentage."""
    pair = _pair(ctx)

    def check():
        current = _refresh(pair)
        if (
            current.primary_state == HAState.PRIMARY_ACTIVE
            and current.secondary_state == HAState.SECONDARY_ACTIVE
            and current.heartbeat == LinkStatus.UP
            and current.replication == ReplicationStatus.UP
            and current.sync_percent >= 100
        ):
            return True
        return float(min(current.sync_percent, 99))

    ctx.wait_until(check, timeout=settings.HA_SYNC_TIMEOUT_SECONDS, every=0.5, what="the pair to become Active")


STEPS[JobKind.CONFIGURE_HA] = [
    Step("install_licenses", install_pending_licenses, "Installing uploaded licenses on both nodes"),
    Step("configure_secondary", configure_secondary, "Configuring the secondary"),
    Step("configure_primary", configure_primary, "Configuring the primary"),
    Step("trap_destinations", set_trap_destinations, "Pointing both agents' events at the portal"),
    Step("wait_active", wait_until_active, "Synchronising primary and secondary", weight=6),
]


# --- update parameters ------------------------------------------------------------------
def _changes(ctx: JobContext) -> dict:
    return ctx.params.get("changes", {})


def update_secondary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _post(ctx, pair.secondary, protocol.PATH_HA_CONFIGURE, _configure_body(pair, "secondary", **_changes(ctx)))


def update_primary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _post(ctx, pair.primary, protocol.PATH_HA_CONFIGURE, _configure_body(pair, "primary", **_changes(ctx)))


def record_parameters(ctx: JobContext) -> None:
    changes = {k: v for k, v in _changes(ctx).items() if k in {"failover_type", "failback_type", "failover_wait"}}
    with transaction.atomic():
        if changes:
            HAPair.objects.filter(pk=ctx.job.pair_id).update(**changes)
        event_record(
            code=EventCode.CONFIG_UPDATED,
            generated_by="mseportal",
            pair=_pair(ctx),
            job=ctx.job,
            remarks=ctx.params.get("remarks", ""),
        )


STEPS[JobKind.UPDATE_HA] = [
    Step("update_secondary", update_secondary, "Updating the secondary"),
    Step("update_primary", update_primary, "Updating the primary"),
    Step("record", record_parameters, "Recording the new parameters"),
]


# --- maintenance mode: the secondary decides automatic failover and failback ---------------
def maintenance_secondary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _post(
        ctx,
        pair.secondary,
        protocol.PATH_HA_CONFIGURE,
        _configure_body(pair, "secondary", maintenance=ctx.params["maintenance"]),
    )


def maintenance_primary(ctx: JobContext) -> None:
    """Best effort: the primary makes no automatic decision, and a primary that is down
    (the usual reason for maintenance) learns it with its next configuration."""
    pair = _pair(ctx)
    try:
        _post(
            ctx,
            pair.primary,
            protocol.PATH_HA_CONFIGURE,
            _configure_body(pair, "primary", maintenance=ctx.params["maintenance"]),
        )
    except agent_client.AgentUnavailable as exc:
        event_record(
            code=EventCode.MAINTENANCE_NOT_TOLD,
            generated_by="mseportal",
            pair=pair,
            job=ctx.job,
            remarks=f"{pair.primary.name} is not answering ({exc.message}); the secondary, "
            "which decides automatic failover, has it.",
        )


def maintenance_record(ctx: JobContext) -> None:
    event_record(
        code=EventCode.CONFIG_UPDATED,
        generated_by="mseportal",
        pair=_pair(ctx),
        job=ctx.job,
        remarks=ctx.params.get("remarks", ""),
    )


STEPS[JobKind.SET_MAINTENANCE] = [
    Step("maintenance_secondary", maintenance_secondary, "Telling the secondary"),
    Step("maintenance_primary", maintenance_primary, "Telling the primary"),
    Step("record", maintenance_record, "Recording it"),
]


# --- switchover / failback ----------------------------------------------------------------
def check_generation(ctx: JobContext) -> None:
    """Fencing: act only if nobody changed who is in charge since the operator asked."""
    expected = ctx.params.get("generation")
    current = _refresh(_pair(ctx))
    if expected is not None and current.generation != expected:
        raise StepFailed(
            f"The pair changed hands since this was requested (generation {expected} → {current.generation}); "
            "check the status and request it again if it is still needed."
        )


def _invoke(ctx: JobContext, what: str) -> None:
    pair = _pair(ctx)
    path = protocol.PATH_FAILOVER if what == "switchover" else protocol.PATH_FAILBACK
    body: dict = {"peer": pair.primary.hm_ip}
    if ctx.params.get("generation") is not None:  # the agents' own fence: refused if the pair moved on
        body["generation"] = ctx.params["generation"]
    _post(ctx, pair.secondary, path, body)


def switchover_invoke(ctx: JobContext) -> None:
    _invoke(ctx, "switchover")


def failback_invoke(ctx: JobContext) -> None:
    _invoke(ctx, "failback")


def wait_failover_active(ctx: JobContext) -> None:
    pair = _pair(ctx)
    ctx.wait_until(
        lambda: _refresh(pair).secondary_state == HAState.FAILOVER_ACTIVE,
        timeout=settings.HA_SWITCH_TIMEOUT_SECONDS,
        what="the secondary to reach FAILOVER_ACTIVE",
    )


def wait_failback_done(ctx: JobContext) -> None:
    pair = _pair(ctx)

    def check():
        current = _refresh(pair)
        return current.primary_state in (
            HAState.PRIMARY_ACTIVE,
            HAState.FAILBACK_COMPLETE,
        ) and current.secondary_state in (
            HAState.SECONDARY_ACTIVE,
            HAState.SECONDARY_ALONE,
        )

    ctx.wait_until(check, timeout=settings.HA_SWITCH_TIMEOUT_SECONDS, what="the primary to be back in charge")


STEPS[JobKind.SWITCHOVER] = [
    Step("check_generation", check_generation, "Checking who is in charge"),
    Step("switchover_invoke", switchover_invoke, "Invoking failover on the secondary"),
    Step("wait_failover_active", wait_failover_active, "Waiting for FAILOVER_ACTIVE", weight=4),
]


def start_primary_services(ctx: JobContext) -> None:
    """After a switchover the primary's services are stopped: bring them back (TERMINATED)."""
    pair = _refresh(_pair(ctx))
    if not pair.primary_services_up:
        _post(ctx, pair.primary, protocol.PATH_SERVICES_START, {})

    def back() -> bool:
        # TERMINATED on the primary, and heard by the secondary (heartbeats Up in its view,
        # which is the pair's while it is in charge): the failback the next step asks for
        # needs the secondary to know the primary is up
        current = _refresh(pair)
        return (
            current.primary_services_up
            and current.primary_state == HAState.TERMINATED
            and current.heartbeat == LinkStatus.UP
        )

    ctx.wait_until(
        back,
        timeout=settings.HA_SWITCH_TIMEOUT_SECONDS,
        what=f"{pair.primary.name} to come back as TERMINATED, heard by {pair.secondary.name}",
    )


STEPS[JobKind.FAILBACK] = [
    Step("start_primary", start_primary_services, "Starting the primary's services"),
    Step("check_generation", check_generation, "Checking who is in charge"),
    Step("failback_invoke", failback_invoke, "Invoking failback on the secondary"),
    Step("wait_failback", wait_failback_done, "Copying the database back to the primary", weight=4),
]


# --- delete the secondary --------------------------------------------------------------------
def _delete_peer(ctx: JobContext, node: Appliance, peer: Appliance) -> None:
    path = protocol.PATH_HA_PEER.format(peer_hm_ip=peer.hm_ip)
    try:
        _post(ctx, node, path, {}, method="DELETE")
    except agent_client.AgentRejected as exc:
        if exc.status != 404:  # already gone: fine, the step is done
            raise


def delete_on_primary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _delete_peer(ctx, pair.primary, pair.secondary)


def delete_on_secondary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _delete_peer(ctx, pair.secondary, pair.primary)


def delete_pair_row(ctx: JobContext) -> None:
    pair = HAPair.objects.select_related("primary", "secondary").filter(pk=ctx.job.pair_id).first()
    if pair is not None:  # a re-run after the row went: nothing left to do
        ha_pair_delete_record(pair=pair, job=ctx.job)


STEPS[JobKind.DELETE_SECONDARY] = [
    Step("delete_on_secondary", delete_on_secondary, "Removing the pairing on the secondary"),
    Step("delete_on_primary", delete_on_primary, "Removing the pairing on the primary"),
    Step("delete_record", delete_pair_row, "Removing the pair from the portal"),
]


# --- start an appliance's services (e.g. the primary after a switchover) ---------------------
def start_services(ctx: JobContext) -> None:
    appliance = Appliance.objects.get(pk=ctx.job.appliance_id)
    _post(ctx, appliance, protocol.PATH_SERVICES_START, {})


def wait_services_up(ctx: JobContext) -> None:
    appliance = Appliance.objects.get(pk=ctx.job.appliance_id)

    def check():
        polling.poll([appliance.pk])
        pairs = HAPair.objects.filter(pk=ctx.job.pair_id) if ctx.job.pair_id else []
        for pair in pairs:
            return pair.primary_services_up if pair.primary_id == appliance.pk else pair.secondary_services_up
        return Appliance.objects.get(pk=appliance.pk).reachability == "reachable"

    ctx.wait_until(check, timeout=settings.HA_SWITCH_TIMEOUT_SECONDS, what=f"{appliance.name}'s services")


# --- recover a primary that lost its configuration (HA recovery mode, spec §3) -----------
def _primary_ha_info(pair: HAPair) -> dict:
    return agent_client.call(agent_client.target_for(pair.primary), "GET", protocol.PATH_HA_INFO)


def _knows_peer(info: dict, peer: Appliance) -> bool:
    return any(isinstance(p, dict) and p.get("hm_ip") == peer.hm_ip for p in info.get("peers") or [])


def recover_check(ctx: JobContext) -> None:
    """The primary must answer, and must be either in recovery mode or already restored
    (a re-run of this job after a crash)."""
    pair = _pair(ctx)
    info = _primary_ha_info(pair)
    if _knows_peer(info, pair.secondary):
        return
    if not info.get("recovery_mode"):
        raise StepFailed(
            f"{pair.primary.name} has no high availability configuration but was not set up in recovery mode: "
            're-run setup on it answering yes to "Start MSE in recovery mode", then recover it again.'
        )


def recover_secondary_in_charge(ctx: JobContext) -> None:
    """The secondary holds the data: it takes charge (if it has not already) before the
    primary comes back behind it."""
    pair = _refresh(_pair(ctx))
    if pair.secondary_state != HAState.FAILOVER_ACTIVE and not _knows_peer(_primary_ha_info(pair), pair.secondary):
        _post(ctx, pair.secondary, protocol.PATH_FAILOVER, {"peer": pair.primary.hm_ip})
    ctx.wait_until(
        lambda: _refresh(pair).secondary_state == HAState.FAILOVER_ACTIVE,
        timeout=settings.HA_SWITCH_TIMEOUT_SECONDS,
        what=f"{pair.secondary.name} to take charge (FAILOVER_ACTIVE)",
    )


def recover_restore_primary(ctx: JobContext) -> None:
    pair = _refresh(_pair(ctx))
    if _knows_peer(_primary_ha_info(pair), pair.secondary):
        return  # restored by an earlier run of this step
    body = _configure_body(pair, "primary")
    body.update(recovery=True, generation=max(pair.secondary_generation, pair.generation))
    _post(ctx, pair.primary, protocol.PATH_HA_CONFIGURE, body)


def recover_wait_terminated(ctx: JobContext) -> None:
    pair = _pair(ctx)
    ctx.wait_until(
        lambda: _refresh(pair).primary_state == HAState.TERMINATED,
        timeout=settings.HA_SWITCH_TIMEOUT_SECONDS,
        what=f"{pair.primary.name} to come back behind the secondary (TERMINATED)",
    )
    event_record(
        code=EventCode.PRIMARY_RECOVERED,
        description=f"Primary {pair.primary.name} recovered from {pair.secondary.name}",
        generated_by="mseportal",
        pair=pair,
        job=ctx.job,
        remarks="Its configuration is restored; it is TERMINATED while the secondary serves the VIP. "
        "A failback copies the data back and returns the VIP.",
    )


STEPS[JobKind.RECOVER_PRIMARY] = [
    Step("recover_check", recover_check, "Checking the primary is in recovery mode"),
    Step(
        "recover_secondary_in_charge", recover_secondary_in_charge, "Making sure the secondary is in charge", weight=3
    ),
    Step("recover_restore_primary", recover_restore_primary, "Restoring the primary's configuration"),
    Step("recover_wait_terminated", recover_wait_terminated, "Waiting for the primary to come back", weight=2),
]


STEPS[JobKind.START_SERVICES] = [
    Step("start_services", start_services, "Starting services"),
    Step("wait_services_up", wait_services_up, "Waiting for the services to be up"),
]


def register_all() -> None:
    """Give the job runner every kind's steps; ``HapairsConfig.ready()`` calls this once."""
    for kind, steps in STEPS.items():
        register(kind, steps)
