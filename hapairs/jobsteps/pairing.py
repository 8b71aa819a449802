"""Pairing: configure HA, update its parameters, maintenance mode."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from hapairs import agent_client
from hapairs.audit import audit_record
from hapairs.choices import EventCode, HAState, JobKind, LinkStatus, ReplicationStatus
from hapairs.jobs import JobContext, Step
from hapairs.jobsteps._common import TRAP_DESTINATIONS_MAX, _configure_body, _pair, _post, _refresh
from hapairs.jobsteps.licenses import install_pending_licenses
from hapairs.models import HAPair
from hapairs.services._common import event_record
from nodeagent import protocol

STEPS: dict[str, list[Step]] = {}


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


def _update_body(ctx: JobContext, pair: HAPair, role: str) -> dict:
    # the witnesses are the pair's own (ha_update wrote them); sent even when just removed
    return _configure_body(pair, role, send_witnesses=bool(ctx.params.get("witnesses")), **_changes(ctx))


def _skipped(ctx: JobContext, node) -> bool:
    """A re-pin job (``repin``: the appliance whose new certificate was trusted) configures only
    its peer: the trusted node itself may be a rebuilt one waiting for its recovery, which a
    plain configure would turn into a fresh pairing."""
    return ctx.params.get("repin") == node.pk


def update_secondary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    if not _skipped(ctx, pair.secondary):
        _post(ctx, pair.secondary, protocol.PATH_HA_CONFIGURE, _update_body(ctx, pair, "secondary"))


def update_primary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    if not _skipped(ctx, pair.primary):
        _post(ctx, pair.primary, protocol.PATH_HA_CONFIGURE, _update_body(ctx, pair, "primary"))


def record_parameters(ctx: JobContext) -> None:
    changes = {k: v for k, v in _changes(ctx).items() if k in {"failover_type", "failback_type", "failover_wait"}}
    with transaction.atomic():
        if changes:
            pair = _pair(ctx)
            before = {name: getattr(pair, name) for name in changes}
            if HAPair.objects.filter(pk=ctx.job.pair_id).update(**changes):
                # the worker's write, once both agents took the parameters, in the job's name
                audit_record("pair.parameters", target=pair, before=before, after={**changes, "job": ctx.job.pk},
                             reason=ctx.job.reason, by=ctx.job.requested_by)  # fmt: skip
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
