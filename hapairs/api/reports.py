"""Health-report schedules and their deliveries, and the alerts: what the Reports page does."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Path, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field

from hapairs import roles, services
from hapairs.api.core import answers, require
from hapairs.api.schemas import Input, Integer, bounded
from hapairs.choices import AlertKind, AlertStatus, DeliveryStatus
from hapairs.models import Alert, Delivery, ReportSchedule
from hapairs.models.reports import REPORT_PERIOD_MAX_DAYS

router = Router(tags=["reports"])
Id = Path(..., ge=1, le=2**63 - 1)
HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
PeriodDays = bounded(1, REPORT_PERIOD_MAX_DAYS)


# --- schedules ------------------------------------------------------------------------------
class ScheduleIn(Input):
    """A schedule, whole (a PUT replaces every field). The times are the portal's time zone."""

    name: str = Field(..., min_length=1, max_length=100, pattern=r"\S")
    recipients: list[str] = Field(..., min_length=1, max_length=50, description="E-mail addresses.")
    cadence: Literal["daily", "weekly", "crontab"] = "daily"
    send_at: str = Field("07:00", pattern=HHMM, description="HH:MM, for daily and weekly.")
    weekday: Integer = Field(1, ge=0, le=6, description="0 Monday … 6 Sunday, for weekly.")
    crontab: str = Field("", max_length=100, description='Five fields, such as "0 7 * * 1-5", for crontab.')
    period_days: PeriodDays | None = Field(None, description="Days a report covers.")
    enabled: bool = True
    also_alerts: bool = False


class ScheduleOut(Schema):
    id: int
    name: str
    recipients: list[str]
    cadence: str
    send_at: str = Field(..., pattern=HHMM)  # as it is given: HH:MM in the portal's time zone
    weekday: int
    crontab: str
    period_days: int
    enabled: bool
    also_alerts: bool
    schedule: str  # in words
    last_sent_at: datetime | None


def schedule_out(schedule: ReportSchedule) -> dict:
    return {
        "id": schedule.pk,
        "name": schedule.name,
        "recipients": schedule.recipient_list,
        "cadence": schedule.cadence,
        "send_at": schedule.send_at.strftime("%H:%M"),
        "weekday": schedule.weekday,
        "crontab": schedule.crontab,
        "period_days": schedule.period_days,
        "enabled": schedule.enabled,
        "also_alerts": schedule.also_alerts,
        "schedule": schedule.schedule_text,
        "last_sent_at": schedule.last_sent_at,
    }


def _fields(payload: ScheduleIn) -> dict:
    return {
        "name": payload.name,
        "recipients": ", ".join(payload.recipients),
        "cadence": payload.cadence,
        "send_at": payload.send_at,
        "weekday": payload.weekday,
        "crontab": payload.crontab,
        "period_days": payload.period_days,
        "enabled": payload.enabled,
        "also_alerts": payload.also_alerts,
    }


def _or_404(model, pk: int, what: str):
    found = model.objects.filter(pk=pk).first()
    if found is None:
        raise HttpError(404, f"No {what} #{pk}.")
    return found


def schedule_or_404(schedule_id: int) -> ReportSchedule:
    return _or_404(ReportSchedule, schedule_id, "report schedule")


@router.get("/reports/schedules", response=answers({200: list[ScheduleOut]}), summary="Health-report schedules")
def list_schedules(request):
    return [schedule_out(s) for s in ReportSchedule.objects.order_by("name")]


@router.post(
    "/reports/schedules", response=answers({201: ScheduleOut}, 400, 403, 422), summary="Add a health-report schedule"
)
def create_schedule(request, payload: ScheduleIn):
    require(request, roles.REPORTS, "edit report schedules")
    return Status(201, schedule_out(services.report_schedule_create(**_fields(payload), by=request.auth)))


@router.get("/reports/schedules/{schedule_id}", response=answers({200: ScheduleOut}, 400, 404))
def get_schedule(request, schedule_id: int = Id):
    return schedule_out(schedule_or_404(schedule_id))


@router.put(
    "/reports/schedules/{schedule_id}",
    response=answers({200: ScheduleOut}, 400, 403, 404, 422),
    summary="Replace a health-report schedule",
)
def update_schedule(request, payload: ScheduleIn, schedule_id: int = Id):
    require(request, roles.REPORTS, "edit report schedules")
    schedule = schedule_or_404(schedule_id)
    return schedule_out(services.report_schedule_update(schedule=schedule, **_fields(payload), by=request.auth))


@router.delete(
    "/reports/schedules/{schedule_id}",
    response=answers({204: None}, 400, 403, 404),
    summary="Delete a schedule (its deliveries stay in the log)",
)
def delete_schedule(request, schedule_id: int = Id):
    require(request, roles.REPORTS, "delete report schedules")
    services.report_schedule_delete(schedule=schedule_or_404(schedule_id), by=request.auth)
    return Status(204, None)


# --- deliveries -----------------------------------------------------------------------------
class DeliveryOut(Schema):
    id: int
    kind: str
    channel: str
    schedule: int | None
    alert: int | None
    recipients: list[str]
    subject: str
    status: str
    attempts: int
    last_error: str
    created_at: datetime
    sent_at: datetime | None


def delivery_out(delivery: Delivery) -> dict:
    return {
        "id": delivery.pk,
        "kind": delivery.kind,
        "channel": delivery.channel,
        "schedule": delivery.schedule_id,
        "alert": delivery.alert_id,
        "recipients": delivery.recipients if delivery.channel == "email" else ["(webhook)"],
        "subject": delivery.subject,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "created_at": delivery.created_at,
        "sent_at": delivery.sent_at,
    }


def delivery_or_404(delivery_id: int) -> Delivery:
    return _or_404(Delivery, delivery_id, "delivery")


@router.post(
    "/reports/schedules/{schedule_id}/send",
    response=answers({202: DeliveryOut}, 400, 403, 404),
    summary="Send the schedule's report now (a delivery; a worker sends it)",
)
def send_now(request, schedule_id: int = Id):
    require(request, roles.REPORTS, "send reports")
    return Status(202, delivery_out(services.report_send_now(schedule=schedule_or_404(schedule_id), by=request.auth)))


@router.get("/reports/deliveries", response=answers({200: list[DeliveryOut]}, 400), summary="Deliveries, newest first")
def list_deliveries(
    request,
    status: DeliveryStatus | None = Query(None),
    schedule: int | None = Query(None, ge=1, le=2**63 - 1),
    limit: int = Query(50, ge=1, le=500),
):
    rows = Delivery.objects.order_by("-created_at", "-pk")
    if status is not None:
        rows = rows.filter(status=status)
    if schedule is not None:
        rows = rows.filter(schedule_id=schedule)
    return [delivery_out(d) for d in rows[:limit]]


@router.get("/reports/deliveries/{delivery_id}", response=answers({200: DeliveryOut}, 400, 404))
def get_delivery(request, delivery_id: int = Id):
    return delivery_out(delivery_or_404(delivery_id))


@router.post(
    "/reports/deliveries/{delivery_id}/retry",
    response=answers({202: DeliveryOut}, 400, 403, 404, 409),
    summary="Send a failed delivery once more",
)
def retry_delivery(request, delivery_id: int = Id):
    require(request, roles.REPORTS, "retry deliveries")
    try:
        delivery = services.delivery_retry(delivery=delivery_or_404(delivery_id), by=request.auth)
    except services.ServiceError as exc:  # not failed (sent, or still being sent): "not now"
        raise HttpError(409, exc.message) from None
    return Status(202, delivery_out(delivery))


# --- alerts ---------------------------------------------------------------------------------
class AlertOut(Schema):
    id: int
    kind: str
    title: str
    actor: str
    reason: str
    status: str
    suppressed_before: int
    pair: str | None
    appliance: str | None
    event: int | None
    job: int | None
    created_at: datetime


@router.get("/alerts", response=answers({200: list[AlertOut]}, 400), tags=["alerts"], summary="Alerts, newest first")
def list_alerts(
    request,
    kind: AlertKind | None = Query(None),
    status: AlertStatus | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
):
    rows = Alert.objects.select_related("pair__primary", "pair__secondary", "appliance").order_by("-created_at", "-pk")
    if kind is not None:
        rows = rows.filter(kind=kind)
    if status is not None:
        rows = rows.filter(status=status)
    return [
        {
            "id": a.pk,
            "kind": a.kind,
            "title": a.title,
            "actor": a.actor,
            "reason": a.reason,
            "status": a.status,
            "suppressed_before": a.suppressed_before,
            "pair": str(a.pair) if a.pair_id else None,
            "appliance": a.appliance.name if a.appliance_id else None,
            "event": a.event_id,
            "job": a.job_id,
            "created_at": a.created_at,
        }
        for a in rows[:limit]
    ]
