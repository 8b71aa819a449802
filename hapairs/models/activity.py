"""What happens to the fleet: jobs, HA events (the agents' and the portal's), API tokens."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q

from hapairs.choices import (
    ACTIVE_JOB_STATUSES,
    AuditSource,
    EventCode,
    JobKind,
    JobStatus,
    Severity,
)
from hapairs.models.fleet import Appliance, HAPair


class Job(models.Model):
    """One operator action run by a worker against the agents."""

    kind = models.CharField(max_length=24, choices=JobKind.choices)
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.PENDING)
    pair = models.ForeignKey(HAPair, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    appliance = models.ForeignKey(Appliance, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    params = models.JSONField(default=dict, blank=True)  # never secrets
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    step = models.CharField(max_length=100, blank=True)
    steps_done = models.JSONField(default=list, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)  # who holds the lease
    lease_until = models.DateTimeField(null=True, blank=True)  # a dead worker's lease runs out
    error = models.TextField(blank=True)
    # who asked a running job to stop (empty: nobody); the runner reads it between steps and
    # during waits, and ends the job cancelled, saying which steps ran (hapairs.jobs)
    cancel_requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["pair"],
                condition=Q(status__in=ACTIVE_JOB_STATUSES) & Q(pair__isnull=False),
                name="job_one_active_per_pair",
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="job_progress_range"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="job_status_created")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_JOB_STATUSES


class ApiToken(models.Model):
    """A user's API token. Only its SHA-256 is stored; the token is shown once."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12)  # first characters, to recognise a token in logs
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # what the token may do, at most (never more than its user's role): read, operate, admin
    scope = models.CharField(max_length=8, default="admin")
    expires_at = models.DateTimeField(null=True, blank=True)  # None: until revoked
    allowed_networks = models.JSONField(default=list, blank=True)  # CIDRs; empty: any address

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.user} ({self.prefix}…)"


class HAEvent(models.Model):
    """One line of the Events Log: from an agent (with its sequence) or from the portal."""

    pair = models.ForeignKey(HAPair, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    # an appliance deleted leaves its events in the log (its name is in their texts)
    appliance = models.ForeignKey(Appliance, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    seq = models.PositiveBigIntegerField(null=True, blank=True)  # the agent's per-node sequence
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    # what happened, as a stable code (the agents' codes and the portal's own): severity,
    # alerts, reports and last failover are decided by it; description is for display
    code = models.CharField(max_length=40, choices=EventCode.choices)
    description = models.CharField("Event Description", max_length=300)
    # the idempotency key of the command that caused it (a job step's key), echoed by the
    # agent; ``job`` is the job it names, so "requested by" and "why" are facts, not guesses
    cause_key = models.CharField(max_length=200, blank=True)
    # a decision nobody asked for (an agent's takeover, the portal's alert held back): the rule
    # that fired, its sentence and its inputs (protocol.Why); null where an operator asked
    why = models.JSONField(null=True, blank=True)
    generated_by = models.CharField("Generated By", max_length=128)
    timestamp = models.DateTimeField("Timestamp", db_index=True)
    remarks = models.CharField("Remarks", max_length=500, blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.INFO)
    generation = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "HA event"
        ordering = ["-timestamp", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["appliance", "seq"], condition=Q(seq__isnull=False), name="haevent_once_per_node_seq"
            ),
        ]
        indexes = [
            # the status screen's Events Log: a pair's events newest first, seeking by (timestamp, id)
            models.Index(fields=["pair", "-timestamp", "-id"], name="haevent_pair_time_id"),
            models.Index(fields=["code", "timestamp"], name="haevent_code_time"),
        ]

    def __str__(self) -> str:
        return self.description


class AuditEntry(models.Model):
    """One write, as hapairs.audit records it: who, from where (page, API, agent, schedule,
    command line, worker), under which request, why, and the fields before and after
    (secrets never: their field names are left out). Written in the write's own
    transaction, so there is no write without its entry and no entry without its write."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150)
    source = models.CharField(max_length=10, choices=AuditSource.choices)
    request_id = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    reason = models.TextField(blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["action", "at"], name="audit_action_at"),
            models.Index(fields=["actor_name", "at"], name="audit_actor_at"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_repr}"


class Drill(models.Model):
    """A failover drill: a switchover and, once the stabilisation window is over, a failback,
    run by one job while a probe writes through the VIP and reads its writes back. Its
    scorecard (hapairs.drills) is what the operator keeps: how long the clients could not
    write, and whether any acknowledged write was lost."""

    pair = models.ForeignKey(HAPair, null=True, blank=True, on_delete=models.SET_NULL, related_name="drills")
    pair_name = models.CharField(max_length=300)  # kept when the pair is gone
    job = models.OneToOneField(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="drill")
    schedule = models.ForeignKey(
        "DrillSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="drills"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)
    # when each phase began (time.time()): "switchover", "failback", "caught_up"; kept in
    # the row, so a drill resumed by another worker still measures from its start
    marks = models.JSONField(default=dict, blank=True)
    # the figures (hapairs.drills.SCORECARD): seconds, counts; None until the drill ends
    scorecard = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["pair", "-created_at"], name="drill_pair_created")]

    def __str__(self) -> str:
        return f"Drill #{self.pk} on {self.pair_name}"


class DrillSchedule(models.Model):
    """A pair's drill on a crontab (the portal's time zone): the beat runs it when due, if the
    pre-flight check passes; when it does not, the refusal is an event, with its reason."""

    pair = models.OneToOneField(HAPair, on_delete=models.CASCADE, related_name="drill_schedule")
    crontab = models.CharField(max_length=100)
    reason = models.CharField(max_length=500)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Drill schedule of {self.pair} ({self.crontab})"
