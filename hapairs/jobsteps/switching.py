"""Switchover and failback."""

from __future__ import annotations

from django.conf import settings

from hapairs.choices import EventCode, HAState, JobKind, LinkStatus
from hapairs.jobs import JobContext, Step, StepFailed
from hapairs.jobsteps._common import _pair, _post, _refresh
from hapairs.models import HAEvent
from nodeagent import protocol

STEPS: dict[str, list[Step]] = {}


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

    def active() -> bool:
        current = _refresh(pair)
        # the witnesses refused this switchover (the primary did not answer, and they still see
        # it): the secondary stands by; the job fails now, in their words, not at the timeout
        refused = HAEvent.objects.filter(job=ctx.job, code=EventCode.TAKEOVER_REFUSED).first()
        if refused is not None and current.secondary_state != HAState.FAILOVER_ACTIVE:
            raise StepFailed(f"{pair.secondary.name} did not take over: {refused.remarks}")
        return current.secondary_state == HAState.FAILOVER_ACTIVE

    ctx.wait_until(active, timeout=settings.HA_SWITCH_TIMEOUT_SECONDS, what="the secondary to reach FAILOVER_ACTIVE")


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
