"""Report schedules (with their beat PeriodicTask) and report deliveries.

A schedule is validated whole before anything is written (every bad field reported at
once, nothing saved); its django-celery-beat ``PeriodicTask`` and ``CrontabSchedule``
are written in the same transaction, so beat never runs a schedule that failed to save.
A report is built and rendered when it is due and stored as a ``Delivery``; the e-mail
itself is sent by a worker after commit (``services.deliveries``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

from celery.schedules import crontab as celery_crontab
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django_celery_beat import validators
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from hapairs import reports
from hapairs.audit import audited
from hapairs.choices import DeliveryChannel, DeliveryKind, EventCode, ReportCadence
from hapairs.models import REPORT_PERIOD_MAX_DAYS, Delivery, ReportSchedule
from hapairs.services._common import ServiceError, actor_name, event_record
from hapairs.services.deliveries import delivery_create

REPORT_TASK = "hapairs.tasks.report_send_scheduled"
MAX_RECIPIENTS = 50
DEFAULT_PERIOD_DAYS = {ReportCadence.DAILY: 1, ReportCadence.WEEKLY: 7, ReportCadence.CRONTAB: 1}
CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
CRON_HINT = "Write five fields — minute hour day-of-month month day-of-week — such as 0 7 * * 1-5."


# --- pure checks (each raises ServiceError naming its field) ---------------------------
def parse_recipients(text: str, *, field: str = "recipients") -> list[str]:
    """Addresses separated by commas, semicolons, spaces or new lines; each one checked."""
    addresses = []
    for address in re.split(r"[,;\s]+", text or ""):
        if address and address.lower() not in {a.lower() for a in addresses}:
            addresses.append(address)
    if not addresses:
        raise ServiceError("Give at least one e-mail address.", field=field)
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise ServiceError(
                f"“{address}” is not an e-mail address (such as noc@example.net).", field=field
            ) from None
    if len(addresses) > MAX_RECIPIENTS:
        raise ServiceError(f"At most {MAX_RECIPIENTS} recipients; use a mailing list for more.", field=field)
    return addresses


def check_crontab(expression: str) -> str:
    """The expression with single spaces, or a ServiceError saying which field is wrong."""
    expression = " ".join((expression or "").split())
    parts = expression.split(" ") if expression else []
    if len(parts) != 5:
        raise ServiceError(
            f"“{expression}” is not a crontab: it has {len(parts)} field{'s' if len(parts) != 1 else ''}, not 5. {CRON_HINT}",
            field="crontab",
        )
    checks = (
        validators.minute_validator,
        validators.hour_validator,
        validators.day_of_month_validator,
        validators.month_of_year_validator,
        validators.day_of_week_validator,
    )
    for value, label, check in zip(parts, CRON_FIELDS, checks, strict=True):
        try:
            check(value)
        except (ValidationError, ValueError):
            raise ServiceError(
                f"“{expression}” is not a crontab: “{value}” is not a valid {label}. {CRON_HINT}", field="crontab"
            ) from None
    try:
        celery_crontab(
            minute=parts[0], hour=parts[1], day_of_month=parts[2], month_of_year=parts[3], day_of_week=parts[4]
        )
    except ValueError as exc:
        raise ServiceError(f"“{expression}” is not a crontab: {exc} {CRON_HINT}", field="crontab") from None
    return expression


def report_schedule_clean(
    *, schedule: ReportSchedule | None, name, recipients, cadence, send_at, weekday, crontab, period_days
) -> dict:
    """Every field checked, all the errors at once (a ServiceError with ``errors`` by field);
    the forms and the admin call it too, so they show what the service would refuse."""
    errors: dict[str, list[str]] = {}
    values: dict = {}

    def check(field_name, fn):
        try:
            values[field_name] = fn()
        except ServiceError as exc:
            errors.setdefault(field_name, []).append(exc.message)

    def name_ok():
        clean = (name or "").strip()
        if not clean:
            raise ServiceError("Give the schedule a name.")
        if len(clean) > 100:
            raise ServiceError("A name is at most 100 characters.")
        taken = ReportSchedule.objects.filter(name__iexact=clean)
        if schedule is not None:
            taken = taken.exclude(pk=schedule.pk)
        if taken.exists():
            raise ServiceError(f"A schedule named “{clean}” already exists.")
        return clean

    def cadence_ok():
        if cadence not in ReportCadence.values:
            raise ServiceError(f"{cadence!r} is not daily, weekly or crontab.")
        return cadence

    def send_at_ok():
        if isinstance(send_at, dt.time):
            return send_at.replace(second=0, microsecond=0)
        try:
            return dt.datetime.strptime(str(send_at), "%H:%M").time()
        except ValueError:
            raise ServiceError(f"“{send_at}” is not a time of day such as 07:00.") from None

    def weekday_ok():
        if str(weekday) not in {str(n) for n in range(7)}:
            raise ServiceError(f"{weekday!r} is not a day of the week.")
        return int(weekday)

    def period_ok():
        days = period_days if period_days not in (None, "") else DEFAULT_PERIOD_DAYS.get(cadence, 1)
        try:
            days = int(days)
        except (TypeError, ValueError):
            raise ServiceError(f"{days!r} is not a number of days.") from None
        if not 1 <= days <= REPORT_PERIOD_MAX_DAYS:
            raise ServiceError(f"A report covers 1 to {REPORT_PERIOD_MAX_DAYS} days, not {days}.")
        return days

    check("name", name_ok)
    check("recipients", lambda: ", ".join(parse_recipients(recipients)))
    check("cadence", cadence_ok)
    check("send_at", send_at_ok)
    check("weekday", weekday_ok)
    check("period_days", period_ok)
    if cadence == ReportCadence.CRONTAB:
        check("crontab", lambda: check_crontab(crontab))
    else:
        values["crontab"] = " ".join((crontab or "").split())
    if errors:
        first = next(iter(errors))
        raise ServiceError(" ".join(m for ms in errors.values() for m in ms), field=first, errors=errors)
    return values


def _sync_periodic_task(schedule: ReportSchedule) -> None:
    """Keep the schedule's beat entry (PeriodicTask + CrontabSchedule) in step with it."""
    minute, hour, day_of_month, month_of_year, day_of_week = schedule.cron_expression.split(" ")
    fields = {
        "minute": minute,
        "hour": hour,
        "day_of_month": day_of_month,
        "month_of_year": month_of_year,
        "day_of_week": day_of_week,
        "timezone": settings.TIME_ZONE,
    }
    cron = CrontabSchedule.objects.filter(**fields).order_by("pk").first() or CrontabSchedule.objects.create(**fields)
    task = schedule.periodic_task or PeriodicTask(name=f"health-report:{schedule.pk}")
    task.task = REPORT_TASK
    task.args = json.dumps([schedule.pk])
    task.kwargs = "{}"
    task.crontab = cron
    task.interval = None
    task.enabled = schedule.enabled
    task.description = f"Health report “{schedule.name}” to {schedule.recipients} ({schedule.schedule_text})"
    task.save()
    if schedule.periodic_task_id != task.pk:
        schedule.periodic_task = task
        schedule.save(update_fields=["periodic_task", "updated_at"])


@audited("report_schedule.create")
def report_schedule_create(
    *,
    name: str,
    recipients: str,
    cadence: str = ReportCadence.DAILY,
    send_at: dt.time | str = dt.time(7, 0),
    weekday: int = 1,
    crontab: str = "",
    period_days: int | None = None,
    enabled: bool = True,
    also_alerts: bool = False,
    by: AbstractBaseUser | None = None,
) -> ReportSchedule:
    values = report_schedule_clean(
        schedule=None,
        name=name,
        recipients=recipients,
        cadence=cadence,
        send_at=send_at,
        weekday=weekday,
        crontab=crontab,
        period_days=period_days,
    )
    with transaction.atomic():
        schedule = ReportSchedule.objects.create(**values, enabled=enabled, also_alerts=also_alerts, created_by=by)
        _sync_periodic_task(schedule)
        event_record(
            code=EventCode.REPORT_SCHEDULE_CREATED,
            description=f"Report schedule “{schedule.name}” created",
            generated_by=actor_name(by),
            remarks=f"{schedule.schedule_text}, covering {schedule.period_days} day(s), to {schedule.recipients}"
            f"{'' if enabled else ' (disabled)'}",
        )
    return schedule


@audited("report_schedule.update", target="schedule")
def report_schedule_update(
    *,
    schedule: ReportSchedule,
    name: str,
    recipients: str,
    cadence: str,
    send_at: dt.time | str,
    weekday: int,
    crontab: str,
    period_days: int | None,
    enabled: bool,
    also_alerts: bool,
    by: AbstractBaseUser | None = None,
) -> ReportSchedule:
    values = report_schedule_clean(
        schedule=schedule,
        name=name,
        recipients=recipients,
        cadence=cadence,
        send_at=send_at,
        weekday=weekday,
        crontab=crontab,
        period_days=period_days,
    )
    with transaction.atomic():
        schedule = ReportSchedule.objects.select_for_update().get(pk=schedule.pk)
        for field_name, value in {**values, "enabled": enabled, "also_alerts": also_alerts}.items():
            setattr(schedule, field_name, value)
        schedule.save(update_fields=[*values, "enabled", "also_alerts", "updated_at"])
        _sync_periodic_task(schedule)
        event_record(
            code=EventCode.REPORT_SCHEDULE_UPDATED,
            description=f"Report schedule “{schedule.name}” updated",
            generated_by=actor_name(by),
            remarks=f"{schedule.schedule_text}, covering {schedule.period_days} day(s), to {schedule.recipients}"
            f"{'' if enabled else ' (disabled)'}",
        )
    return schedule


@audited("report_schedule.delete", target="schedule")
def report_schedule_delete(*, schedule: ReportSchedule, by: AbstractBaseUser | None = None) -> None:
    """The schedule and its beat entry go; its deliveries stay in the log. A schedule
    another request deleted meanwhile is gone already: nothing more to do (and no event)."""
    with transaction.atomic():
        locked = ReportSchedule.objects.select_for_update().filter(pk=schedule.pk).first()
        if locked is None:
            return
        schedule = locked
        if schedule.periodic_task is not None:
            schedule.periodic_task.delete()
        name = schedule.name
        schedule.delete()
        event_record(
            code=EventCode.REPORT_SCHEDULE_DELETED,
            description=f"Report schedule “{name}” deleted",
            generated_by=actor_name(by),
        )


# --- report deliveries -------------------------------------------------------------------
def report_delivery_create(
    *,
    recipients: list[str],
    period_days: int,
    key: str,
    schedule: ReportSchedule | None = None,
    by: AbstractBaseUser | None = None,
    now: dt.datetime | None = None,
    queue: bool = True,
) -> Delivery:
    """Build the report now, store it as one e-mail delivery (once per ``key``) and queue
    its send after commit. The mail itself never goes out from here."""
    report = reports.report_build(period_days=period_days, now=now)
    delivery, _ = delivery_create(
        key=key,
        kind=DeliveryKind.REPORT,
        channel=DeliveryChannel.EMAIL,
        recipients=recipients,
        subject=reports.report_subject(report, name=schedule.name if schedule else ""),
        body_text=reports.render_text(report),
        body_html=reports.render_html(report),
        schedule=schedule,
        by=by,
        queue=queue,
    )
    return delivery


@audited("report_schedule.run", target="schedule", unless_unchanged=True)
def report_schedule_run(*, schedule: ReportSchedule, now: dt.datetime | None = None) -> Delivery | None:
    """Beat: the schedule is due. One delivery per schedule and minute, so a beat that
    fires twice (two beat processes, a restart) sends one report."""
    if not schedule.enabled:
        return None
    now = now or timezone.now()
    slot = timezone.localtime(now).replace(second=0, microsecond=0)
    key = f"report:{schedule.pk}:{slot:%Y%m%dT%H%M%z}"
    existing = Delivery.objects.filter(key=key).first()
    if existing is not None:
        return existing
    return report_delivery_create(
        recipients=schedule.recipient_list, period_days=schedule.period_days, key=key, schedule=schedule, now=now
    )


@audited("report_schedule.send_now", target="schedule")
def report_send_now(*, schedule: ReportSchedule, by: AbstractBaseUser | None = None) -> Delivery:
    """The Reports page's "Send now": a new delivery every time it is asked for."""
    return report_delivery_create(
        recipients=schedule.recipient_list,
        period_days=schedule.period_days,
        key=f"report:{schedule.pk}:now:{uuid.uuid4().hex}",
        schedule=schedule,
        by=by,
    )
