"""Health reports, alerts and their deliveries."""

from __future__ import annotations

import datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from hapairs.choices import (
    OPEN_DELIVERY_STATUSES,
    AlertKind,
    AlertStatus,
    DeliveryChannel,
    DeliveryKind,
    DeliveryStatus,
    ReportCadence,
    Weekday,
)
from hapairs.models.activity import HAEvent, Job
from hapairs.models.fleet import Appliance, HAPair, License

# --- health reports, alerts and their deliveries ---------------------------------------
REPORT_PERIOD_MAX_DAYS = 90


class ReportSchedule(models.Model):
    """A health report sent by e-mail on a schedule. Beat runs it through the
    django-celery-beat PeriodicTask (and CrontabSchedule) the services keep in step."""

    name = models.CharField(max_length=100, unique=True)
    recipients = models.TextField(help_text="E-mail addresses, separated by commas or new lines.")
    cadence = models.CharField("Period", max_length=8, choices=ReportCadence.choices, default=ReportCadence.DAILY)
    send_at = models.TimeField(
        "Send at", default=datetime.time(7, 0), help_text="Daily and weekly reports: the time of day."
    )
    weekday = models.PositiveSmallIntegerField(
        choices=Weekday.choices, default=Weekday.MONDAY, help_text="Weekly reports: the day."
    )
    crontab = models.CharField(
        max_length=100,
        blank=True,
        help_text="Custom period: minute hour day-of-month month day-of-week, e.g. 0 7 * * 1-5.",
    )
    period_days = models.PositiveSmallIntegerField(
        "Report covers (days)",
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(REPORT_PERIOD_MAX_DAYS)],
        help_text="The report looks back this many days.",
    )
    enabled = models.BooleanField(default=True)
    also_alerts = models.BooleanField(
        "Also send alerts", default=False, help_text="These recipients also get every alert as it happens."
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    last_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(period_days__gte=1) & Q(period_days__lte=REPORT_PERIOD_MAX_DAYS),
                name="reportschedule_period_days_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def recipient_list(self) -> list[str]:
        return [address.strip() for address in self.recipients.replace("\n", ",").split(",") if address.strip()]

    @property
    def cron_expression(self) -> str:
        """minute hour day-of-month month day-of-week, whatever the cadence."""
        if self.cadence == ReportCadence.CRONTAB:
            return self.crontab
        day_of_week = str(self.weekday) if self.cadence == ReportCadence.WEEKLY else "*"
        return f"{self.send_at.minute} {self.send_at.hour} * * {day_of_week}"

    @property
    def schedule_text(self) -> str:
        """'Daily at 07:00', 'Weekly on Monday at 07:00', or the crontab expression."""
        if self.cadence == ReportCadence.DAILY:
            return f"Daily at {self.send_at:%H:%M}"
        if self.cadence == ReportCadence.WEEKLY:
            return f"Weekly on {self.get_weekday_display()} at {self.send_at:%H:%M}"
        return f"Cron “{self.crontab}”"


class Alert(models.Model):
    """One thing that happened and was (or was not, by the rate limit) sent at once."""

    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    key = models.CharField(
        max_length=200, unique=True, help_text="The occurrence: the same failover or event alerts once."
    )
    subject_key = models.CharField(
        max_length=64, help_text="What the rate limit counts per: pair:3, appliance:5, license:9."
    )
    pair = models.ForeignKey(HAPair, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    appliance = models.ForeignKey(Appliance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    event = models.ForeignKey(HAEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    license = models.ForeignKey(License, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    title = models.CharField(max_length=300)
    actor = models.CharField("Who", max_length=200, help_text="A user name, or the agents / the portal.")
    reason = models.CharField("Why", max_length=500, blank=True)
    status = models.CharField(max_length=12, choices=AlertStatus.choices)
    suppressed_before = models.PositiveIntegerField(
        default=0, help_text="Alerts of this kind for this subject held back by the rate limit since the last one sent."
    )
    # why it was sent, held back or sent to nobody: the rule, its sentence, its inputs (as an
    # event's ``why``); the Events Log shows it beside the event that raised it
    decision = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["subject_key", "kind", "-created_at"], name="alert_subject_kind_time")]

    def __str__(self) -> str:
        return self.title


class AlertThrottle(models.Model):
    """The rate limit's state per (subject, kind); its row is also the lock that decides."""

    subject_key = models.CharField(max_length=64)
    kind = models.CharField(max_length=20)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    suppressed = models.PositiveIntegerField(default=0)  # held back since last_sent_at
    suppressed_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject_key", "kind"], name="alertthrottle_once_per_subject_kind")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject_key}"


class Delivery(models.Model):
    """One message (a report or an alert, by e-mail or webhook), sent at most once.

    ``key`` is unique, so the same report slot or alert is never written twice; a worker
    claims the row (a conditional update) before it talks to the server, so two workers
    never send it twice either. Every attempt is appended to ``attempt_log``.
    """

    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=8, choices=DeliveryKind.choices)
    channel = models.CharField(max_length=8, choices=DeliveryChannel.choices, default=DeliveryChannel.EMAIL)
    schedule = models.ForeignKey(
        ReportSchedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    recipients = models.JSONField(default=list)  # e-mail addresses, or [the webhook URL]
    subject = models.CharField(max_length=300)
    body_text = models.TextField()  # the text/plain part, or the webhook's JSON body
    body_html = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)  # [{"n", "at", "ok", "error"}]
    last_error = models.TextField(blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)  # while SENDING
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # while RETRYING
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["status", "created_at"], name="delivery_status_created")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} to {self.recipients_display}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_DELIVERY_STATUSES

    @property
    def recipients_display(self) -> str:
        """Addresses; a webhook URL only by its scheme and host (its path may hold a token)."""
        if self.channel == DeliveryChannel.WEBHOOK:
            parts = [urlsplit(url) for url in self.recipients]
            return ", ".join(f"{p.scheme}://{p.netloc}/…" for p in parts)
        return ", ".join(self.recipients)
