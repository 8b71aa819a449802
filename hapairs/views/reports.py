"""Reports: the schedules, Send now, a preview of the report, the delivery log, recent
alerts, and the mailbox of the embedded file sink. Monitors read; Operators and Admins
edit schedules, send now and retry deliveries (``roles.REPORTS``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hapairs import mailbox, reports, roles, services
from hapairs.delivery import describe_backend
from hapairs.forms import ReportScheduleForm
from hapairs.models import REPORT_PERIOD_MAX_DAYS, Alert, Delivery, ReportSchedule
from hapairs.views._common import Pager, posted, render_page, render_polled, requires

EDIT = roles.REPORTS


def _alert_config() -> dict:
    webhook = settings.ALERT_WEBHOOK_URL
    return {
        "recipients": settings.ALERT_RECIPIENTS,
        "schedule_recipients": ReportSchedule.objects.filter(enabled=True, also_alerts=True).count(),
        "webhook": f"{urlsplit(webhook).scheme}://{urlsplit(webhook).netloc}/…" if webhook else "",
        "interval": settings.ALERT_MIN_INTERVAL_SECONDS,
        "backend": describe_backend(),
    }


@require_GET
def report_list(request: HttpRequest) -> HttpResponse:
    deliveries = Delivery.objects.select_related("schedule", "alert", "requested_by")
    pager = Pager(request, deliveries.count(), per_page=25)
    page = list(deliveries.order_by("-created_at", "-pk")[pager.offset : pager.offset + pager.per_page])
    live = any(delivery.is_open for delivery in page)
    can_edit = request.user.has_perm(EDIT)
    context = {
        "schedules": list(ReportSchedule.objects.order_by("name")),
        "deliveries": page,
        "pager": pager,
        "live": live,
        "alerts": list(
            Alert.objects.select_related("pair__primary", "pair__secondary", "appliance").order_by(
                "-created_at", "-pk"
            )[:20]
        ),
        "alert_config": _alert_config(),
        "can_edit": can_edit,
        "mailbox": can_edit and mailbox.available(),
    }
    return render_polled(
        request, "hapairs/report_list.html", context, target="delivery-log", partial="deliveries", live=live
    )


def _initial(schedule: ReportSchedule | None) -> dict:
    if schedule is None:
        return {}
    return {
        name: getattr(schedule, name)
        for name in (
            "name",
            "recipients",
            "cadence",
            "send_at",
            "weekday",
            "crontab",
            "period_days",
            "enabled",
            "also_alerts",
        )
    }


@require_http_methods(["GET", "POST"])
@requires(EDIT, "edit report schedules")
def report_schedule_edit(request: HttpRequest, schedule_id: int | None = None) -> HttpResponse:
    schedule = get_object_or_404(ReportSchedule, pk=schedule_id) if schedule_id is not None else None
    form = ReportScheduleForm(posted(request)[0], initial=_initial(schedule))
    if request.method == "POST" and form.is_valid():
        values = {name: form.cleaned_data[name] for name in form.fields}
        try:
            if schedule is None:
                schedule = services.report_schedule_create(**values, by=request.user)
                done = "created"
            else:
                schedule = services.report_schedule_update(schedule=schedule, **values, by=request.user)
                done = "saved"
        except services.ServiceError as exc:
            for field_name, errors in exc.errors.items():
                form.add_error(field_name if field_name in form.fields else None, errors)
        else:
            messages.success(
                request,
                f"Schedule “{schedule.name}” {done}: {schedule.schedule_text}, "
                f"to {schedule.recipients}{'' if schedule.enabled else ' (disabled)'}.",
            )
            return redirect("report_list")
    context = {"form": form, "schedule": schedule, "time_zone": settings.TIME_ZONE}
    return render_page(request, "hapairs/report_form.html", context, status=400 if form.errors else 200)


@require_POST
@requires(EDIT, "delete report schedules")
def report_schedule_delete(request: HttpRequest, schedule_id: int) -> HttpResponse:
    schedule = get_object_or_404(ReportSchedule, pk=schedule_id)
    services.report_schedule_delete(schedule=schedule, by=request.user)
    messages.success(request, f"Schedule “{schedule.name}” deleted; its deliveries stay in the log.")
    return redirect("report_list")


@require_POST
@requires(EDIT, "send reports")
def report_send(request: HttpRequest, schedule_id: int) -> HttpResponse:
    """Send now: the report is built here and stored; a worker sends it after commit."""
    schedule = get_object_or_404(ReportSchedule, pk=schedule_id)
    delivery = services.report_send_now(schedule=schedule, by=request.user)
    messages.success(
        request,
        f"Health report “{schedule.name}” queued for {', '.join(delivery.recipients)} "
        f"(delivery #{delivery.pk}); the log below shows when it is sent.",
    )
    return redirect("report_list")


@require_GET
def report_preview(request: HttpRequest) -> HttpResponse:
    """The report as it would be sent now; ?days=N, ?format=text, ?raw=1 for the bare e-mail HTML."""
    try:
        days = max(1, min(int(request.GET.get("days", "1")), REPORT_PERIOD_MAX_DAYS))
    except ValueError:
        days = 1
    report = reports.report_build(period_days=days)
    if request.GET.get("raw"):
        response = HttpResponse(reports.render_html(report))
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
        return response
    context = {
        "report": report,
        "days": days,
        "subject": reports.report_subject(report),
        "html": reports.render_html(report),
        "text": reports.render_text(report),
        "format": "text" if request.GET.get("format") == "text" else "html",
        "day_choices": [1, 7, 30],
    }
    return render_page(request, "hapairs/report_preview.html", context)


@require_GET
def report_delivery(request: HttpRequest, delivery_id: int) -> HttpResponse:
    delivery = get_object_or_404(Delivery.objects.select_related("schedule", "alert", "requested_by"), pk=delivery_id)
    context = {"delivery": delivery, "can_edit": request.user.has_perm(EDIT)}
    return render_page(request, "hapairs/report_delivery.html", context)


@require_POST
@requires(EDIT, "retry deliveries")
def report_delivery_retry(request: HttpRequest, delivery_id: int) -> HttpResponse:
    delivery = get_object_or_404(Delivery, pk=delivery_id)
    try:
        services.delivery_retry(delivery=delivery, by=request.user)
    except services.ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Delivery #{delivery.pk} queued again.")
    return redirect("report_list")


def _mailbox_or_404() -> None:
    if not mailbox.available():
        raise Http404(
            "The mailbox shows the file e-mail backend's messages; this portal sends mail through "
            f"{settings.EMAIL_BACKEND}."
        )


@require_GET
@requires(EDIT, "read the portal's mailbox")
def report_mailbox(request: HttpRequest) -> HttpResponse:
    _mailbox_or_404()
    return render_page(
        request, "hapairs/report_mailbox.html", {"messages_": mailbox.messages(limit=100), "folder": mailbox.folder()}
    )


@require_GET
@requires(EDIT, "read the portal's mailbox")
def report_mailbox_message(request: HttpRequest, filename: str, index: int) -> HttpResponse:
    _mailbox_or_404()
    message = mailbox.message(filename, index)
    if message is None:
        raise Http404("No such message in the mailbox.")
    return render_page(request, "hapairs/report_mailbox_message.html", {"message": message})
