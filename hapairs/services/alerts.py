"""Alerts: a failover, failback, split brain, unreachable node, failed job or expiring
license, sent at once to the alert recipients (and the webhook), saying who acted and why.

The services that record those events call ``alert_queue`` (``alerts_for_ingested`` for
agent events stored in bulk). That only registers an on-commit hook queueing
``tasks.alert_dispatch``: nothing is sent inside a request or a transaction. The task
calls ``alert_raise``, which decides under a row lock (``AlertThrottle``) whether this
alert goes out or is held back — at most one per kind per subject (a pair, a node, a
license) per ``MSEPORTAL_ALERT_MIN_INTERVAL_SECONDS`` — writes the ``Alert`` and one
``Delivery`` per channel, and queues their sends after commit. The next alert that goes
out says how many were held back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from hapairs import dispatch, reports
from hapairs.choices import (
    FAILBACK_CODES,
    FAILOVER_CODES,
    AlertKind,
    AlertStatus,
    DeliveryChannel,
    DeliveryKind,
    EventCode,
    LicenseStatus,
)
from hapairs.models import Alert, AlertThrottle, Appliance, HAEvent, HAPair, Job, License, ReportSchedule
from hapairs.services.deliveries import delivery_create

KIND_OF_AGENT_EVENT = {
    **{code: AlertKind.FAILOVER for code in FAILOVER_CODES},
    **{code: AlertKind.FAILBACK for code in FAILBACK_CODES},
    EventCode.HEARTBEAT_PATH_DOWN: AlertKind.HEARTBEAT_PATH,  # type: ignore[attr-defined]
    EventCode.TAKEOVER_REFUSED: AlertKind.PARTITION,  # type: ignore[attr-defined]
    EventCode.FENCED: AlertKind.PARTITION,  # type: ignore[attr-defined]
}
PARTITION_REMEDY = (
    "The witnesses decided, by the rule the event names, so the pair cannot split: never two "
    "owners of the VIP. Restore the network between the nodes (and to the witnesses); the nodes "
    "rejoin by themselves when it heals. Do not switch over by hand unless you know the primary "
    "is down: a primary that is only cut off may still hold writes its secondary lacks."
)
PATH_REMEDY = (
    "The pair still exchanges heartbeats on its other path, so nothing failed over. Check the "
    "cable, switch port and interface of the silent path (ip link, ethtool) on both nodes; until "
    "it is back one more fault would leave the pair with no heartbeat path at all."
)
# alerts about the pair's own network: (title, who decided, remedy)
NETWORK_ALERTS = {
    AlertKind.HEARTBEAT_PATH: ("Heartbeat path down", "the agents", PATH_REMEDY),
    AlertKind.PARTITION: ("Partition", "the agents and their witnesses", PARTITION_REMEDY),
}
EXPIRY_STEPS = (7, 1, 0)  # besides MSEPORTAL_LICENSE_WARN_DAYS: alert again a week, a day before, and on the day


# --- hooks the recording services call ---------------------------------------------------
def alert_queue(*, kind: str, event: HAEvent) -> None:
    """Alert about ``event`` once the transaction that recorded it commits."""
    event_id = event.pk
    dispatch.on_commit(dispatch.ALERT_DISPATCH, kind, event_id)


def alerts_for_ingested(rows: list[HAEvent]) -> None:
    """Agent events just stored in bulk (so without their ids): queue the failover and
    failback alerts. Costs one query only when such an event is among them."""
    wanted = [
        (row.appliance_id, row.seq, KIND_OF_AGENT_EVENT[row.code])
        for row in rows
        if row.pair_id is not None and row.code in KIND_OF_AGENT_EVENT
    ]
    if not wanted:
        return
    which = Q()
    for appliance_id, seq, _ in wanted:
        which |= Q(appliance_id=appliance_id, seq=seq)
    ids = {(a, s): pk for pk, a, s in HAEvent.objects.filter(which).values_list("pk", "appliance_id", "seq")}
    for appliance_id, seq, kind in wanted:
        if (appliance_id, seq) in ids:
            event_id = ids[(appliance_id, seq)]
            dispatch.on_commit(dispatch.ALERT_DISPATCH, kind, event_id)


# --- what an alert says ----------------------------------------------------------------------
@dataclass
class AlertContent:
    kind: str
    key: str  # the occurrence (one alert per failover, per event, per license threshold)
    subject_key: str  # what the rate limit counts per
    title: str
    actor: reports.Actor
    at: datetime
    what: str = ""
    remarks: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    pair: HAPair | None = None
    appliance: Appliance | None = None
    event: HAEvent | None = None
    job: Job | None = None
    license: License | None = None


PORTAL_ACTOR = reports.Actor(kind="portal", name="the portal's polling")


def _pair_facts(pair: HAPair) -> list[tuple[str, str]]:
    return [
        ("Pair now", f"{pair.primary.name} {pair.primary_state} / {pair.secondary.name} {pair.secondary_state}"),
        ("Heartbeats", f"{pair.get_heartbeat_display()} · data replication {pair.get_replication_display()}"),
        (
            "Failover / failback",
            f"{pair.get_failover_type_display()} / {pair.get_failback_type_display()}"
            f" · Long Failover Wait {pair.failover_wait} s",
        ),
    ]


def describe_event(kind: str, event: HAEvent) -> AlertContent:
    """The alert for an event the portal recorded; who caused it is the job its event names."""
    pair, job = event.pair, event.job
    facts = _pair_facts(pair) if pair is not None else []
    if kind in (AlertKind.FAILOVER, AlertKind.FAILBACK):
        what = "failover" if kind == AlertKind.FAILOVER else "failback"
        actor = reports.attribute(kind=what, job=job)
        in_charge = pair.secondary.name if what == "failover" else pair.primary.name
        key = f"{kind}:pair{pair.pk}:gen{event.generation}" if event.generation is not None else f"event:{event.pk}"
        if actor.kind == "agents" and what == "failover":
            facts.insert(
                0,
                (
                    "How",
                    f"heartbeats from {pair.primary.name} were missing for the Long Failover Wait "
                    f"({pair.failover_wait} s), so {pair.secondary.name} took over by itself",
                ),
            )
        return AlertContent(
            kind=kind,
            key=key,
            subject_key=f"pair:{pair.pk}",
            title=f"{what.title()} on {pair.primary.name} → {pair.secondary.name}: {in_charge} is in charge",
            actor=actor,
            at=event.timestamp,
            what=event.description,
            remarks=event.remarks,
            facts=facts,
            pair=pair,
            event=event,
            job=job,
        )
    if kind == AlertKind.SPLIT_BRAIN:
        return AlertContent(
            kind=kind,
            key=f"event:{event.pk}",
            subject_key=f"pair:{pair.pk}",
            title=f"Split brain on {pair.primary.name} → {pair.secondary.name}: both nodes hold {pair.primary.vip}",
            actor=PORTAL_ACTOR,
            at=event.timestamp,
            what=event.description,
            remarks=event.remarks,
            facts=facts,
            pair=pair,
            event=event,
        )
    if kind in NETWORK_ALERTS:
        # both nodes report it: one alert per pair, kind, code, generation and minute
        node = event.appliance.name if event.appliance else "a node"
        what, who, remedy = NETWORK_ALERTS[kind]
        return AlertContent(
            kind=kind,
            key=f"{kind}:pair{pair.pk}:{event.code}:gen{event.generation}:{event.timestamp:%Y%m%d%H%M}",
            subject_key=f"pair:{pair.pk}",
            title=f"{what} on {pair.primary.name} → {pair.secondary.name}: {event.description} ({node})",
            actor=reports.Actor(kind="agents", name=who, what=what.lower()),
            at=event.timestamp,
            what=event.description,
            remarks=f"{event.remarks} {remedy}",
            facts=facts,
            pair=pair,
            event=event,
        )
    if kind == AlertKind.UNREACHABLE:
        appliance = event.appliance
        if appliance is None:  # many nodes at once (status.MASS_UNREACHABLE): one fleet-wide alert
            return AlertContent(
                kind=kind,
                key=f"event:{event.pk}",
                subject_key="fleet",
                title=event.description,
                actor=PORTAL_ACTOR,
                at=event.timestamp,
                what=event.description,
                remarks=event.remarks,
                event=event,
            )
        return AlertContent(
            kind=kind,
            key=f"event:{event.pk}",
            subject_key=f"appliance:{event.appliance_id}",
            title=f"{appliance.name} is not answering the portal",
            actor=PORTAL_ACTOR,
            at=event.timestamp,
            what=event.description,
            remarks=event.remarks,
            facts=facts,
            pair=pair,
            appliance=appliance,
            event=event,
        )
    if kind == AlertKind.JOB_FAILED:
        target = (
            f"{pair.primary.name} → {pair.secondary.name}"
            if pair is not None
            else event.appliance.name
            if event.appliance
            else "the portal"
        )
        subject = f"pair:{pair.pk}" if pair is not None else f"appliance:{event.appliance_id}"
        actor = reports.job_actor(job) if job is not None else PORTAL_ACTOR
        title = f"{job.get_kind_display() if job else 'A job'} failed on {target}"
        if job is not None:
            title += f" (job #{job.pk})"
        return AlertContent(
            kind=kind,
            key=f"event:{event.pk}",
            subject_key=subject,
            title=title,
            actor=actor,
            at=event.timestamp,
            what=event.description,
            remarks=event.remarks,
            facts=[("Error", job.error if job else event.remarks), *facts],
            pair=pair,
            appliance=event.appliance,
            event=event,
            job=job,
        )
    raise ValueError(f"no alert of kind {kind!r} for an event")


def expiry_step(days_left: int, warn_days: int) -> str | None:
    """Which warning a license with ``days_left`` is due (None: not yet)."""
    if days_left < 0:
        return "expired"
    if days_left > warn_days:
        return None
    return f"{min(step for step in (warn_days, *EXPIRY_STEPS) if days_left <= step)}d"


def describe_license(license: License, *, today: date) -> AlertContent | None:
    step = expiry_step((license.expires_on - today).days, settings.LICENSE_WARN_DAYS)
    if step is None:
        return None
    row = reports.expiring_license(license, today)
    appliance = license.installed_on or license.source_file.appliance
    facts = [
        (
            "License",
            f"{row.feature}{f' ({row.sku})' if row.sku else ''} × {row.count}"
            f"{', evaluation' if row.is_evaluation else ''}",
        ),
        ("Expires on", f"{row.expires_on:%Y-%m-%d} ({row.when})"),
        ("Status", row.status),
    ]
    return AlertContent(
        kind=AlertKind.LICENSE_EXPIRING,
        key=f"license:{license.pk}:{step}",
        subject_key=f"license:{license.pk}",
        title=f"License {row.feature} on {row.appliance}: {row.when}",
        actor=reports.Actor(kind="portal", name="the portal's daily license check"),
        at=timezone.now(),
        what="Upload a renewed license file before it expires."
        if row.days_left >= 0
        else "The license has expired: upload a renewed license file.",
        facts=facts,
        appliance=appliance,
        license=license,
    )


def alert_recipients() -> list[str]:
    """MSEPORTAL_ALERT_RECIPIENTS and the recipients of enabled schedules that also take alerts."""
    addresses = list(settings.ALERT_RECIPIENTS)
    for text in ReportSchedule.objects.filter(enabled=True, also_alerts=True).values_list("recipients", flat=True):
        addresses += [a.strip() for a in text.replace("\n", ",").split(",") if a.strip()]
    seen, unique = set(), []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


# --- deciding and writing -----------------------------------------------------------------
def alert_raise(*, content: AlertContent, now: datetime | None = None) -> Alert | None:
    """Record the alert once per occurrence; send it, or hold it back by the rate limit.
    Returns None when this occurrence was already handled."""
    now = now or timezone.now()
    if Alert.objects.filter(key=content.key).exists():
        return None
    recipients = alert_recipients()
    webhook = settings.ALERT_WEBHOOK_URL
    interval = timedelta(seconds=settings.ALERT_MIN_INTERVAL_SECONDS)
    with transaction.atomic():
        throttle, _ = AlertThrottle.objects.get_or_create(subject_key=content.subject_key, kind=content.kind)
        throttle = AlertThrottle.objects.select_for_update().get(pk=throttle.pk)
        if Alert.objects.filter(key=content.key).exists():  # another worker got here first
            return None
        suppressed_before, suppressed_since = 0, None
        window = _interval_text(interval)
        inputs = {"interval_s": int(interval.total_seconds()), "kind": content.kind, "subject": content.subject_key}
        if not recipients and not webhook:
            status = AlertStatus.NOBODY
            decision = {"rule": "alert.no_recipients", "inputs": inputs,
                        "text": "Alert not sent: no recipients (MSEPORTAL_ALERT_RECIPIENTS or a report schedule "
                                "that takes alerts) and no webhook."}  # fmt: skip
        elif throttle.last_sent_at is not None and now - throttle.last_sent_at < interval:
            status = AlertStatus.SUPPRESSED
            throttle.suppressed += 1
            throttle.suppressed_since = throttle.suppressed_since or now
            throttle.save(update_fields=["suppressed", "suppressed_since"])
            ago = _interval_text(now - throttle.last_sent_at)
            decision = {"rule": "alert.rate_limit",
                        "inputs": {**inputs, "held_back": throttle.suppressed,
                                   "since_last_sent_s": int((now - throttle.last_sent_at).total_seconds())},
                        "text": f"Alert held back: {throttle.suppressed + 1} in the last {window} for this subject; "
                                f"one was sent {ago} ago (at most one per {window}). The next one sent counts "
                                "these."}  # fmt: skip
        else:
            status = AlertStatus.SENT
            suppressed_before, suppressed_since = throttle.suppressed, throttle.suppressed_since
            decision = {"rule": "alert.sent", "inputs": {**inputs, "held_back_before": suppressed_before},
                        "text": f"Alert sent: none of this kind for this subject in the last {window}"
                                + (f"; {suppressed_before} held back before it." if suppressed_before else ".")}  # fmt: skip
            throttle.last_sent_at, throttle.suppressed, throttle.suppressed_since = now, 0, None
            throttle.save(update_fields=["last_sent_at", "suppressed", "suppressed_since"])
        alert = Alert.objects.create(
            kind=content.kind,
            key=content.key[:200],
            subject_key=content.subject_key,
            pair=content.pair,
            appliance=content.appliance,
            event=content.event,
            job=content.job,
            license=content.license,
            title=content.title[:300],
            actor=content.actor.name[:200],
            reason=content.actor.reason[:500],
            status=status,
            suppressed_before=suppressed_before,
            decision=decision,
        )
        if status == AlertStatus.SENT:
            context = {
                "alert": alert,
                "content": content,
                "suppressed_since": suppressed_since,
                "interval_text": window,
            }
            subject = f"[mseportal] {content.title} — {_short_actor(content.actor)}"
            if recipients:
                delivery_create(
                    key=f"alert:{alert.key}:email",
                    kind=DeliveryKind.ALERT,
                    channel=DeliveryChannel.EMAIL,
                    recipients=recipients,
                    subject=subject,
                    alert=alert,
                    body_text=reports.tidy_text(render_to_string("hapairs/reports/alert.txt", context)),
                    body_html=render_to_string("hapairs/reports/alert.html", context),
                )
            if webhook:
                delivery_create(
                    key=f"alert:{alert.key}:webhook",
                    kind=DeliveryKind.ALERT,
                    channel=DeliveryChannel.WEBHOOK,
                    recipients=[webhook],
                    subject=subject,
                    alert=alert,
                    body_text=json.dumps(webhook_payload(alert, content, suppressed_since), sort_keys=True),
                )
    return alert


def alert_for_event(*, kind: str, event_id: int) -> Alert | None:
    """The task's entry point for event alerts (the event may be gone: nothing to do)."""
    event = (
        HAEvent.objects.select_related("pair__primary", "pair__secondary", "appliance", "job__requested_by")
        .filter(pk=event_id)
        .first()
    )
    if event is None or (
        event.pair is None and kind in (AlertKind.FAILOVER, AlertKind.FAILBACK, AlertKind.SPLIT_BRAIN)
    ):
        return None
    return alert_raise(content=describe_event(kind, event))


def license_expiry_check(*, today: date | None = None) -> list[Alert]:
    """Beat, daily: alert each license (not removed) once per step as its expiry nears —
    at MSEPORTAL_LICENSE_WARN_DAYS, a week, a day, on the day, and once expired."""
    today = today or timezone.localdate()
    licenses = list(
        License.objects.exclude(status=LicenseStatus.REMOVED)
        .filter(expires_on__isnull=False, expires_on__lte=today + timedelta(days=settings.LICENSE_WARN_DAYS))
        .select_related("source_file__appliance", "installed_on")
        .order_by("expires_on", "pk")
    )
    done = set(
        Alert.objects.filter(kind=AlertKind.LICENSE_EXPIRING, license__in=licenses).values_list("key", flat=True)
    )
    raised = []
    for license in licenses:
        content = describe_license(license, today=today)
        if content is not None and content.key not in done:
            alert = alert_raise(content=content)
            if alert is not None:
                raised.append(alert)
    return raised


def webhook_payload(alert: Alert, content: AlertContent, suppressed_since: datetime | None) -> dict:
    pair = content.pair
    event = content.event
    return {
        "alert": alert.kind,
        "id": alert.pk,
        "key": alert.key,
        "title": alert.title,
        "at": content.at.isoformat(),
        "pair": {"primary": pair.primary.name, "secondary": pair.secondary.name} if pair else None,
        "appliance": content.appliance.name if content.appliance else None,
        "actor": {
            "kind": content.actor.kind,
            "name": content.actor.name,
            "reason": content.actor.reason,
            "job": content.actor.job_id,
            "says": content.actor.sentence,
        },
        "event": {
            "description": event.description,
            "generated_by": event.generated_by,
            "timestamp": event.timestamp.isoformat(),
            "remarks": event.remarks,
            "severity": event.severity,
        }
        if event
        else None,
        "facts": dict(content.facts),
        "suppressed_before": alert.suppressed_before,
        "suppressed_since": suppressed_since.isoformat() if suppressed_since else None,
    }


def _short_actor(actor: reports.Actor) -> str:
    if actor.kind == "operator":
        return f"requested by {actor.name}"
    if actor.kind == "agents":
        return f"automatic {actor.what}, by the agents"
    return f"detected by {actor.name}"


def _interval_text(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    if seconds % 60 == 0 and seconds >= 60:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
