"""The health report: built once as data, rendered as HTML (styles inline, for mail
clients) and as plain text.

``report_build`` reads the fleet in seven queries whatever its size: appliance counts,
the pairs, heartbeat samples already averaged per pair and hour (or day) by the
database, the failover/failback/split-brain events of the period, the jobs that explain
them (and the ones that failed), the licenses about to expire, and the period's failover
drills with their scorecards. Everything after that
is pure Python over those rows, so the figures can be tested without a mail server.

Who caused a failover or failback is a fact, not a guess: an operator's command carries
its job's idempotency key, the agents echo it on every event the command causes (on both
nodes), and the portal stores the job the key names on the event (``HAEvent.job``). An
event with no job: the agents did it themselves.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Avg, Count, Max, Min, Q
from django.db.models.functions import Trunc
from django.template.loader import render_to_string
from django.utils import timezone

from hapairs.choices import (
    FAILBACK_CODES,
    FAILOVER_CODES,
    EventCode,
    HAState,
    JobStatus,
    LicenseStatus,
    LinkStatus,
    Reachability,
    ReplicationStatus,
)
from hapairs.drills import scorecard_rows
from hapairs.models import Appliance, Drill, HAEvent, HAPair, HeartbeatSample, Job, License
from hapairs.report_data import (
    BAR_MAX_PX,
    Actor,
    Bar,
    DrillReport,
    ExpiringLicense,
    FailedJob,
    FleetSummary,
    HealthReport,
    HeartbeatTrend,
    PairReport,
    SplitBrainAlert,
    Switch,
)
from hapairs.selectors import pair_status_sentence

REPORTED_CODES = (*FAILOVER_CODES, *FAILBACK_CODES, EventCode.SPLIT_BRAIN)  # type: ignore[attr-defined]


# --- reading the fleet (seven queries) ---------------------------------------------------
def report_build(*, period_days: int = 1, now: datetime | None = None) -> HealthReport:
    now = now or timezone.now()
    start = now - timedelta(days=period_days)
    warn_days = settings.LICENSE_WARN_DAYS
    counts = Appliance.objects.aggregate(
        total=Count("pk"), unreachable=Count("pk", filter=Q(reachability=Reachability.UNREACHABLE))
    )
    pairs = list(
        HAPair.objects.select_related("primary", "secondary", "maintenance_by").order_by("primary__name", "pk")
    )
    bucket = "hour" if period_days <= 2 else "day"
    buckets = list(
        HeartbeatSample.objects.filter(at__gte=start, at__lte=now)
        .annotate(bucket=Trunc("at", bucket))
        .values("pair_id", "bucket")
        .annotate(mean=Avg("mean_ms"), n=Count("pk"), low=Min("mean_ms"), high=Max("mean_ms"))
        .order_by("pair_id", "bucket")
    )
    events = list(
        HAEvent.objects.filter(timestamp__gte=start, timestamp__lte=now, pair__isnull=False, code__in=REPORTED_CODES)
        .order_by("timestamp", "pk")
        .values("pk", "pair_id", "code", "timestamp", "generation", "remarks", "job_id")
    )
    jobs = list(
        Job.objects.filter(
            Q(pk__in={event["job_id"] for event in events if event["job_id"] is not None})
            | Q(status=JobStatus.FAILED, finished_at__gte=start, finished_at__lte=now)
        ).select_related("requested_by", "pair__primary", "pair__secondary", "appliance")
    )
    today = timezone.localdate(now)
    licenses = list(
        License.objects.exclude(status=LicenseStatus.REMOVED)
        .filter(expires_on__isnull=False, expires_on__lte=today + timedelta(days=warn_days))
        .select_related("source_file__appliance", "installed_on")
        .order_by("expires_on", "feature", "pk")
    )
    drills = list(
        Drill.objects.filter(created_at__lte=now)
        .filter(Q(created_at__gte=start) | Q(finished_at__gte=start))
        .select_related("job", "requested_by")
        .order_by("created_at", "pk")
    )
    return assemble(
        now=now,
        drills=drills,
        start=start,
        period_days=period_days,
        appliance_counts=counts,
        pairs=pairs,
        buckets=buckets,
        bucket=bucket,
        events=events,
        jobs=jobs,
        licenses=licenses,
        today=today,
        warn_days=warn_days,
    )


def assemble(
    *,
    now,
    start,
    period_days,
    appliance_counts,
    pairs,
    buckets,
    bucket,
    events,
    jobs,
    licenses,
    today,
    warn_days,
    drills=(),
) -> HealthReport:
    """Pure: the report from the rows ``report_build`` read."""
    by_pair_buckets: dict[int, list[dict]] = {}
    for row in buckets:
        by_pair_buckets.setdefault(row["pair_id"], []).append(row)
    jobs_by_id = {job.pk: job for job in jobs}
    switches: dict[int, list[Switch]] = {}
    split_brains: dict[int, list[SplitBrainAlert]] = {}
    seen: dict[tuple, int] = {}  # (pair, kind, generation) → index in switches[pair]
    for event in events:
        pair_id = event["pair_id"]
        if event["code"] == EventCode.SPLIT_BRAIN:  # type: ignore[attr-defined]
            split_brains.setdefault(pair_id, []).append(
                SplitBrainAlert(at=event["timestamp"], remarks=event["remarks"])
            )
            continue
        kind = "failover" if event["code"] in FAILOVER_CODES else "failback"
        actor = attribute(kind=kind, job=jobs_by_id.get(event["job_id"]))
        # both nodes report a failback: one switch per (pair, kind, generation)
        once = (pair_id, kind, event["generation"] if event["generation"] is not None else event["pk"])
        if once in seen:
            if actor.kind == "operator":  # the other node's report names the job: keep that
                index = seen[once]
                switches[pair_id][index] = dataclasses.replace(switches[pair_id][index], actor=actor)
            continue
        seen[once] = len(switches.setdefault(pair_id, []))
        switches[pair_id].append(
            Switch(
                kind=kind, at=event["timestamp"], actor=actor, generation=event["generation"], remarks=event["remarks"]
            )
        )
    failed: dict[int | None, list[FailedJob]] = {}
    for job in sorted(
        (j for j in jobs if j.status == JobStatus.FAILED and j.finished_at and j.finished_at >= start),
        key=lambda j: (j.finished_at, j.pk),
    ):
        failed.setdefault(job.pair_id, []).append(failed_job(job))

    drills_by_pair: dict[int, list[DrillReport]] = {}
    for drill in drills:
        drills_by_pair.setdefault(drill.pair_id, []).append(
            DrillReport(
                drill_id=drill.pk,
                at=drill.created_at,
                by=drill.requested_by.get_username() if drill.requested_by else "the drill schedule",
                status=drill.job.get_status_display() if drill.job else "Failed",
                rows=scorecard_rows(drill.scorecard),
            )
        )

    pair_reports = []
    for pair in pairs:
        pair_reports.append(
            PairReport(
                pair_id=pair.pk,
                primary=pair.primary.name,
                secondary=pair.secondary.name,
                health=pair_health(pair),
                status=_status_sentence(pair),
                primary_state=pair.primary_state,
                secondary_state=pair.secondary_state,
                primary_reachable=pair.primary_reachable,
                secondary_reachable=pair.secondary_reachable,
                heartbeat=pair.get_heartbeat_display(),
                replication=pair.get_replication_display(),
                sync_percent=pair.sync_percent,
                mean_heartbeat_ms=pair.mean_heartbeat_ms,
                failover_type=pair.get_failover_type_display(),
                failback_type=pair.get_failback_type_display(),
                split_brain_now=pair.split_brain,
                maintenance=(
                    f"by {pair.maintenance_by.get_username() if pair.maintenance_by else 'someone'}: {pair.maintenance_reason}"
                    if pair.maintenance
                    else ""
                ),
                trend=heartbeat_trend(by_pair_buckets.get(pair.pk, []), start=start, end=now, bucket=bucket),
                switches=switches.get(pair.pk, []),
                failed_jobs=failed.get(pair.pk, []),
                split_brains=split_brains.get(pair.pk, []),
                drills=drills_by_pair.get(pair.pk, []),
            )
        )
    pair_ids = {pair.pk for pair in pairs}
    fleet = FleetSummary(
        appliances=appliance_counts["total"],
        appliances_unreachable=appliance_counts["unreachable"],
        pairs=len(pair_reports),
        active=sum(p.health == "active" for p in pair_reports),
        degraded=sum(p.health == "degraded" for p in pair_reports),
        failed_over=sum(p.health == "failed_over" for p in pair_reports),
        maintenance=sum(p.health == "maintenance" for p in pair_reports),
        unreachable=sum(p.health == "unreachable" for p in pair_reports),
        split_brain=sum(p.split_brain_now for p in pair_reports),
    )
    return HealthReport(
        generated_at=now,
        period_start=start,
        period_end=now,
        period_days=period_days,
        fleet=fleet,
        pairs=pair_reports,
        licenses=[expiring_license(license, today) for license in licenses],
        other_failed_jobs=[job for pair_id, jobs_ in failed.items() if pair_id not in pair_ids for job in jobs_],
        license_warn_days=warn_days,
    )


def pair_health(pair: HAPair) -> str:
    """One of HEALTH_LABELS: maintenance, then unreachable, failed over, degraded, active."""
    if pair.maintenance:
        return "maintenance"
    if not (pair.primary_reachable and pair.secondary_reachable):
        return "unreachable"
    if pair.secondary_state in (HAState.FAILOVER_INVOKED, HAState.FAILOVER_ACTIVE, HAState.FAILBACK_ACTIVE) or (
        pair.secondary_in_charge and not pair.primary_in_charge
    ):
        return "failed_over"
    healthy = (
        pair.primary_state == HAState.PRIMARY_ACTIVE
        and pair.secondary_state == HAState.SECONDARY_ACTIVE
        and pair.heartbeat == LinkStatus.UP
        and pair.replication == ReplicationStatus.UP
        and pair.sync_percent >= 100
        and not pair.split_brain
    )
    return "active" if healthy else "degraded"


def _status_sentence(pair: HAPair) -> str:
    return pair_status_sentence(pair)


def attribute(*, kind: str, job: Job | None) -> Actor:
    """Who caused a failover/failback the agents reported: the job its event names (the
    key the agents echoed), or the agents themselves."""
    if job is None:
        return Actor(kind="agents", name="the agents", what=kind)
    return job_actor(job)


def job_actor(job: Job) -> Actor:
    name = job.requested_by.get_username() if job.requested_by else "mseportal"
    return Actor(kind="operator", name=name, reason=job.reason, job_id=job.pk)


def failed_job(job: Job) -> FailedJob:
    if job.pair is not None:
        target = f"{job.pair.primary.name} → {job.pair.secondary.name}"
    else:
        target = job.appliance.name if job.appliance else "—"
    return FailedJob(
        job_id=job.pk,
        kind=job.get_kind_display(),
        at=job.finished_at,
        target=target,
        actor=job_actor(job),
        error=job.error,
    )


def expiring_license(license: License, today: date) -> ExpiringLicense:
    appliance = license.installed_on or license.source_file.appliance
    return ExpiringLicense(
        license_id=license.pk,
        appliance=appliance.name,
        feature=license.feature,
        sku=license.sku,
        count=license.count,
        expires_on=license.expires_on,
        days_left=(license.expires_on - today).days,
        is_evaluation=license.is_evaluation,
        status=license.get_status_display(),
    )


def heartbeat_trend(rows: list[dict], *, start: datetime, end: datetime, bucket: str) -> HeartbeatTrend:
    """Bars for every hour (day) of the period, gaps included, and first half vs second half."""
    samples = sum(row["n"] for row in rows)
    by_start = {row["bucket"]: row for row in rows}
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    local = timezone.localtime(start)
    cursor = local.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        cursor = cursor.replace(hour=0)
    starts = []
    while cursor <= end:
        starts.append(cursor)
        cursor = timezone.localtime(cursor + step)
    # the database's buckets are matched by instant, whatever their time zone
    by_instant = {value.timestamp(): row for value, row in by_start.items()}
    high = max((row["mean"] for row in rows), default=0) or 0
    bars = []
    for bar_start in starts:
        row = by_instant.get(bar_start.timestamp())
        mean = row["mean"] if row else None
        height = 0 if mean is None or high <= 0 else max(2, round(BAR_MAX_PX * mean / high))
        label = f"{bar_start:%H:%M}" if bucket == "hour" else f"{bar_start:%a %d %b}"
        bars.append(
            Bar(
                start=bar_start,
                mean_ms=mean,
                height=height,
                label=f"{label}: {mean:.1f} ms" if mean is not None else f"{label}: no sample",
            )
        )
    filled = [row for row in sorted(rows, key=lambda r: r["bucket"])]
    half = len(filled) // 2

    def weighted(part):
        n = sum(row["n"] for row in part)
        return sum(row["mean"] * row["n"] for row in part) / n if n else None

    return HeartbeatTrend(
        samples=samples,
        mean_ms=weighted(filled),
        low_ms=min((row["low"] for row in rows), default=None),
        high_ms=max((row["high"] for row in rows), default=None),
        first_half_ms=weighted(filled[:half]) if half else None,
        second_half_ms=weighted(filled[half:]) if half else None,
        bucket=bucket,
        bars=bars,
    )


# --- rendering --------------------------------------------------------------------------
def render_html(report: HealthReport) -> str:
    return render_to_string("hapairs/reports/health_report.html", {"report": report})


def render_text(report: HealthReport) -> str:
    return tidy_text(render_to_string("hapairs/reports/health_report.txt", {"report": report}))


def report_subject(report: HealthReport, *, name: str = "") -> str:
    title = name or "Health report"
    return f"[mseportal] {title}, {timezone.localtime(report.period_end):%Y-%m-%d}: {report.headline}"


def tidy_text(text: str) -> str:
    """Templates leave blank runs and trailing spaces; a plain-text mail should not."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


__all__ = ["HealthReport", "PairReport", "attribute", "render_html", "render_text", "report_build", "report_subject"]
