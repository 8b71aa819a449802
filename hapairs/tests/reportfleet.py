"""A small fleet with a day's history, shared by the report, alert and page tests.

Two pairs. ``p1 → s1``: an operator's switchover an hour ago (job with requested_by and
reason), the agents' failover event that followed, now failed over (s1 in charge, p1 back
as TERMINATED); its mean heartbeat rose from about 1 ms to about 4 ms over the day.
``p2 → s2``: an automatic failover by the agents 5 h ago and an automatic failback 3 h
ago (reported by both nodes), active now, heartbeat steady around 2 ms, and an
"update parameters" job of an operator that failed. Licenses: an evaluation license on s1
with 12 days left, one on p2 expired 3 days ago; one expiring in 60 days and a removed
one, which the report leaves out.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from hapairs import services
from hapairs.agent_replies import AgentEvent, HAInfo, PeerStatus
from hapairs.choices import EventCode, JobStatus, LicenseStatus
from hapairs.jobkeys import job_step_key
from hapairs.models import HAPair, HeartbeatSample, Job, License, LicenseFile
from hapairs.services.status import PollResult, status_record

SWITCHOVER_REASON = "Replacing the primary's power supply"
UPDATE_REASON = "Longer wait for the Seoul link"
UPDATE_ERROR = "mse-s2 refused the new parameters: long failover wait 200 s is outside 2–120 s"


def peer_info(
    peer_ip: str,
    state: str,
    *,
    in_charge: bool,
    generation: int = 1,
    running: bool = True,
    heartbeat: str = "up",
    replication: str = "up",
    mean_ms: float = 1.2,
    sync: int = 100,
    status: str = "Active",
) -> HAInfo:
    return HAInfo(
        node="n",
        running=True,
        role="",
        generation=generation,
        peers=[
            PeerStatus(
                peer_hm_ip=peer_ip,
                state=state,
                running=running,
                heartbeat=heartbeat,
                replication=replication,
                sync_percent=sync,
                mean_heartbeat_ms=mean_ms,
                generation=generation,
                in_charge=in_charge,
                status=status,
                allowed_switch_at=None,
                instance_db_name="mseos3",
            )
        ],
    )


def healthy(pair: HAPair, *, generation: int = 1, mean_ms: float = 1.2) -> None:
    status_record(
        [
            PollResult(
                pair.primary_id,
                peer_info(
                    pair.secondary.hm_ip, "PRIMARY_ACTIVE", in_charge=True, generation=generation, mean_ms=mean_ms
                ),
            ),
            PollResult(
                pair.secondary_id,
                peer_info(
                    pair.primary.hm_ip, "SECONDARY_ACTIVE", in_charge=False, generation=generation, mean_ms=mean_ms
                ),
            ),
        ]
    )


def failed_over(pair: HAPair, *, generation: int = 2) -> None:
    status_record(
        [
            PollResult(
                pair.primary_id,
                peer_info(
                    pair.secondary.hm_ip,
                    "TERMINATED",
                    in_charge=False,
                    generation=generation,
                    heartbeat="down",
                    replication="down",
                    status="Instance is in failover active state",
                ),
            ),
            PollResult(
                pair.secondary_id,
                peer_info(
                    pair.primary.hm_ip,
                    "FAILOVER_ACTIVE",
                    in_charge=True,
                    generation=generation,
                    heartbeat="down",
                    replication="down",
                    status="Instance is in failover active state",
                ),
            ),
        ]
    )


def agent_event(pair: HAPair, node, seq: int, code: str, *, at, generation: int, cause_key: str = "") -> None:
    """An event pushed by one node's agent, as the ingest API stores it; ``cause_key``: the
    key of the command that caused it, as the agent echoes it."""
    peer = pair.secondary if node.pk == pair.primary_id else pair.primary
    services.events_ingest(
        appliance=node,
        events=[
            AgentEvent(
                seq=seq,
                code=code,
                description=EventCode(code).label,
                generated_by="Secondary" if node.pk == pair.secondary_id else "Primary",
                timestamp=at,
                remarks=f"Generation {generation}.",
                generation=generation,
                peer_hm_ip=peer.hm_ip,
                cause_key=cause_key,
            )
        ],
    )


def license(
    appliance, feature: str, *, days: int, evaluation: bool = False, status: str = LicenseStatus.INSTALLED
) -> License:
    today = timezone.localdate()
    source = LicenseFile.objects.create(
        filename=f"{feature.lower()}-{appliance.name}.lic",
        sha256=f"{feature}{appliance.pk}{days}".ljust(64, "0")[:64],
        content="(test)",
        appliance=appliance,
    )
    return License.objects.create(
        source_file=source,
        feature=feature,
        sku=f"L-{feature[:8]}",
        count=100,
        host_udi="ANY",
        expires_on=today + timedelta(days=days),
        is_evaluation=evaluation,
        status=status,
        installed_on=appliance if status == LicenseStatus.INSTALLED else None,
    )


def samples(pair: HAPair, values: list[float], *, hours: float = 23) -> None:
    """The pair's heartbeat history: ``values`` spread evenly over the last ``hours``."""
    now = timezone.now()
    step = timedelta(hours=hours) / max(1, len(values) - 1)
    HeartbeatSample.objects.filter(pair=pair).delete()  # the poller's own samples from building the fleet
    HeartbeatSample.objects.bulk_create(
        [
            HeartbeatSample(pair=pair, at=now - timedelta(hours=hours) + step * i, mean_ms=value)
            for i, value in enumerate(values)
        ]
    )


def build_fleet(make_appliance, operator, *, prefix: str = "127.41") -> dict:
    now = timezone.now()
    p1 = make_appliance(name="mse-p1", hm_ip=f"{prefix}.0.11", vip=f"{prefix}.0.10", vip_prefixlen=24)
    s1 = make_appliance(name="mse-s1", hm_ip=f"{prefix}.0.12")
    p2 = make_appliance(name="mse-p2", hm_ip=f"{prefix}.1.11", vip=f"{prefix}.1.10", vip_prefixlen=24)
    s2 = make_appliance(name="mse-s2", hm_ip=f"{prefix}.1.12")
    make_appliance(name="mse-lonely", hm_ip=f"{prefix}.2.11")
    pair1 = services.ha_pair_create(primary=p1, secondary=s1)
    pair2 = services.ha_pair_create(primary=p2, secondary=s2, failover_type="automatic", failback_type="automatic")
    healthy(pair1)
    healthy(pair2, mean_ms=2.0)

    # p2 → s2: the agents fail over and back by themselves; both nodes report the failback
    agent_event(pair2, s2, 1, EventCode.FAILOVER_ACTIVE, at=now - timedelta(hours=5), generation=2)
    agent_event(pair2, s2, 2, EventCode.FAILBACK_COMPLETE, at=now - timedelta(hours=3), generation=3)
    agent_event(pair2, p2, 1, EventCode.FAILBACK_COMPLETE, at=now - timedelta(hours=3, seconds=-2), generation=3)
    healthy(pair2, generation=3, mean_ms=2.0)
    update = services.ha_update(
        pair=pair2,
        failover_type="automatic",
        failback_type="automatic",
        failover_wait=30,
        by=operator,
        reason=UPDATE_REASON,
    )
    Job.objects.filter(pk=update.pk).update(
        status=JobStatus.FAILED,
        error=UPDATE_ERROR,
        created_at=now - timedelta(minutes=31),
        finished_at=now - timedelta(minutes=30),
    )

    # p1 → s1: an operator's switchover, then the agents' failover event
    pair1.refresh_from_db()
    switchover = services.ha_switchover(pair=pair1, by=operator, reason=SWITCHOVER_REASON)
    agent_event(
        pair1,
        s1,
        1,
        EventCode.FAILOVER_ACTIVE,
        at=now - timedelta(minutes=58),
        generation=2,
        cause_key=job_step_key(switchover.pk, "switchover_invoke"),
    )
    Job.objects.filter(pk=switchover.pk).update(
        status=JobStatus.SUCCEEDED, created_at=now - timedelta(minutes=60), finished_at=now - timedelta(minutes=57)
    )
    failed_over(pair1)

    samples(pair1, [1.0, 1.1, 1.0, 1.2, 1.1, 1.3, 3.6, 3.9, 4.1, 4.0, 3.8, 4.2])
    samples(pair2, [2.0, 2.1, 1.9, 2.0, 2.0, 2.1, 1.9, 2.0, 2.1, 2.0, 1.9, 2.0])

    license(s1, "CAS_ELEMENTS", days=12, evaluation=True)
    license(p2, "WIPS_MONITOR", days=-3)
    license(p1, "MSAP_CLICKS", days=60)
    license(s2, "CAS_SPARE", days=5, status=LicenseStatus.REMOVED)
    return {
        "pair1": HAPair.objects.get(pk=pair1.pk),
        "pair2": HAPair.objects.get(pk=pair2.pk),
        "switchover": Job.objects.get(pk=switchover.pk),
        "update": Job.objects.get(pk=update.pk),
        "p1": p1,
        "s1": s1,
        "p2": p2,
        "s2": s2,
    }


__all__ = ["agent_event", "build_fleet", "failed_over", "healthy", "license", "peer_info", "samples"]
