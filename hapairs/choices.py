"""Named choices and status sets shared by models, rules, services and templates.

Values are what the database stores; labels are the words the seed's screens use.
"""

from __future__ import annotations

from django.db import models

from nodeagent import haconfig, protocol


class DeviceType(models.TextChoices):
    MSE_3310 = "3310", "MSE-3310"
    MSE_3350 = "3350", "MSE-3350"
    MSE_3355 = "3355", "MSE-3355"
    MSE_3365 = "3365", "MSE-3365"
    VA_LOW = "VA-Low", "MSE Virtual Appliance (Low)"
    VA_STANDARD = "VA-Standard", "MSE Virtual Appliance (Standard)"
    VA_HIGH = "VA-High", "MSE Virtual Appliance (High)"


VIRTUAL_TYPES = frozenset({DeviceType.VA_LOW, DeviceType.VA_STANDARD, DeviceType.VA_HIGH})


# --- the wire's vocabulary (nodeagent.protocol), as database choices ------------------------
# Derived, never retyped: a state, role or mode the agents add appears here by itself.

# What set-up chose for a node: primary (role 1 in setup.sh), secondary (role 2), or not yet.
Role = models.TextChoices(
    "Role", [("UNCONFIGURED", ("none", "Not configured")), *((r.name, (r.value, r.title)) for r in protocol.Role)]
)


class Reachability(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"  # never polled yet
    REACHABLE = "reachable", "Reachable"  # the last poll answered
    UNREACHABLE = "unreachable", "Unreachable"  # the last poll timed out or was refused


# Failover type and failback type (spec §2 rule 8); stored in lower case.
SwitchType = models.TextChoices("SwitchType", [(m.name, (m.value.lower(), m.value)) for m in protocol.Mode])

# "When the witnesses cannot be reached and the primary is gone" (the agents' witness modes):
# a mode the agents add fails here at import until it has its sentence.
WITNESS_MODE_LABELS = {
    haconfig.WITNESS_SAFE: "Safe: never take over (no acknowledged write is lost)",
    haconfig.WITNESS_AVAILABILITY: "Availability: take over after the wait (may lose writes the primary acknowledged alone)",
}
WitnessMode = models.TextChoices(
    "WitnessMode", [(mode.upper(), (mode, WITNESS_MODE_LABELS[mode])) for mode in haconfig.WITNESS_MODES]
)

# What a node's Health Monitor reports as its Current state (spec §5); UNKNOWN: not reported
# yet, or the node is unreachable.
HAState = models.TextChoices(
    "HAState", [("UNKNOWN", ("UNKNOWN", "Unknown")), *((s.name, (s.value, s.value)) for s in protocol.HAState)]
)

# Heartbeats (Up / Down) on the status screen.
LinkStatus = models.TextChoices(
    "LinkStatus",
    [("UNKNOWN", ("unknown", "Unknown")), *((s.name, (s.name.lower(), s.value)) for s in protocol.LinkStatus)],
)

# Data Replication on the status screen.
ReplicationStatus = models.TextChoices(
    "ReplicationStatus",
    [("UNKNOWN", ("unknown", "Unknown")), *((s.name, (s.name.lower(), s.value)) for s in protocol.ReplicationStatus)],
)

# What the portal records itself, beside the agents' codes: stable codes that decide
# severity, alerts and reports (hapairs.events); the label is the display default.
PORTAL_EVENT_CODES = (
    ("APPLIANCE_ADDED", "appliance_added", "Mobility Services Engine added"),
    ("APPLIANCE_PASSWORD_CHANGED", "appliance_password_changed", "Appliance password changed"),
    ("APPLIANCE_CHANGED", "appliance_changed", "Appliance changed"),
    ("APPLIANCE_DELETED", "appliance_deleted", "Mobility Services Engine deleted"),
    ("PAIR_RECORDED", "pair_recorded", "High availability pair recorded"),
    ("MAINTENANCE_ON", "maintenance_on", "Maintenance mode on: automatic failover paused"),
    ("MAINTENANCE_OFF", "maintenance_off", "Maintenance mode off"),
    ("MAINTENANCE_NOT_TOLD", "maintenance_not_told", "Maintenance mode not told to the primary"),
    ("SECONDARY_DELETED", "secondary_deleted", "Secondary deleted"),
    ("PRIMARY_RECOVERED", "primary_recovered", "Primary recovered"),
    ("JOB_REQUESTED", "job_requested", "Job requested"),
    ("JOB_COMPLETED", "job_completed", "Job completed"),
    ("JOB_FAILED", "job_failed", "Job failed"),
    ("JOB_CANCELLED", "job_cancelled", "Job cancelled"),
    ("LICENSE_UPLOADED", "license_uploaded", "License file uploaded"),
    ("REPORT_SCHEDULE_CREATED", "report_schedule_created", "Report schedule created"),
    ("REPORT_SCHEDULE_UPDATED", "report_schedule_updated", "Report schedule updated"),
    ("REPORT_SCHEDULE_DELETED", "report_schedule_deleted", "Report schedule deleted"),
    ("SPLIT_BRAIN", "split_brain", "Split brain detected: primary and secondary are both active"),
    ("NODE_UNREACHABLE", "node_unreachable", "Node is not answering the portal"),
    ("NODES_UNREACHABLE", "nodes_unreachable", "Nodes stopped answering the portal at once"),
    ("EVENT_LOG_RESTARTED", "event_log_restarted", "Event log restarted"),
    ("CERTIFICATE_CHANGED", "certificate_changed", "TLS certificate changed: the portal refuses it"),
    ("CERTIFICATE_TRUSTED", "certificate_trusted", "TLS certificate trusted"),
    ("CERTIFICATE_PINNED", "certificate_pinned", "TLS certificate pinned"),
    ("CLOCK_OFF", "clock_off", "Clock off the portal's"),
    ("CLOCK_BACK", "clock_back", "Clock back in step with the portal's"),
    ("DRILL_SCHEDULED", "drill_scheduled", "Failover drill scheduled"),
    ("DRILL_REFUSED", "drill_refused", "Failover drill refused by the pre-flight check"),
    ("DRILL_COMPLETED", "drill_completed", "Failover drill scorecard recorded"),
    ("TOKEN_ISSUED", "token_issued", "API token issued"),
    ("TOKEN_REVOKED", "token_revoked", "API token revoked"),
    ("NOTE", "note", "Note"),  # an event recorded before codes existed, whose text matched none
)

EventCode = models.TextChoices(
    "EventCode",
    [
        *((c.name, (c.value, c.text)) for c in protocol.EventCode),
        *((n, (v, label)) for n, v, label in PORTAL_EVENT_CODES),
    ],
)


FAILOVER_CODES = frozenset({EventCode.FAILOVER_ACTIVE})  # type: ignore[attr-defined]
FAILBACK_CODES = frozenset({EventCode.FAILBACK_COMPLETE})  # type: ignore[attr-defined]


class JobKind(models.TextChoices):
    CONFIGURE_HA = "configure_ha", "Configure high availability"
    UPDATE_HA = "update_ha", "Update high availability parameters"
    INSTALL_LICENSE = "install_license", "Install license"
    REMOVE_LICENSE = "remove_license", "Remove license"
    SWITCHOVER = "switchover", "Switchover"
    FAILBACK = "failback", "Failback"
    DELETE_SECONDARY = "delete_secondary", "Delete secondary"
    RECOVER_PRIMARY = "recover_primary", "Recover primary"
    START_SERVICES = "start_services", "Start services"
    SET_MAINTENANCE = "set_maintenance", "Set maintenance mode"
    DRILL = "drill", "Failover drill"
    REMOVE_FROM_PRIMARY = "remove_from_primary", "Remove the pairing from the primary only"
    REMOVE_FROM_SECONDARY = "remove_from_secondary", "Remove the pairing from the secondary only"
    RESET_SYNC = "reset_sync", "Reset synchronisation"


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # row written, task queued (or about to be, on commit)
    RUNNING = "running", "Running"  # a worker has claimed it and is running its steps
    SUCCEEDED = "succeeded", "Succeeded"  # every step done
    FAILED = "failed", "Failed"  # a step failed; error holds the operator-facing reason
    CANCELLED = "cancelled", "Cancelled"  # withdrawn before a worker claimed it


JobStatus.ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)  # type: ignore[attr-defined]
ACTIVE_JOB_STATUSES = (JobStatus.PENDING.value, JobStatus.RUNNING.value)


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


# The severity of an event by its code; every other code is INFO.
EVENT_SEVERITY = {
    EventCode.FAILOVER_ACTIVE: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.HEARTBEATS_LOST: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.STEPPED_DOWN: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.REPLICATION_DOWN: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.HEARTBEAT_PATH_DOWN: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.TAKEOVER_REFUSED: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.TAKEOVER_CONFIRMED: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.FENCED: Severity.CRITICAL,  # type: ignore[attr-defined]
    EventCode.FAILBACK_ABORTED: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.NODE_UNREACHABLE: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.CERTIFICATE_CHANGED: Severity.CRITICAL,  # type: ignore[attr-defined]
    EventCode.EVENT_LOG_RESTARTED: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.JOB_FAILED: Severity.WARNING,  # type: ignore[attr-defined]
    EventCode.NODES_UNREACHABLE: Severity.CRITICAL,  # type: ignore[attr-defined]
    EventCode.SPLIT_BRAIN: Severity.CRITICAL,  # type: ignore[attr-defined]
    EventCode.CLOCK_OFF: Severity.WARNING,  # type: ignore[attr-defined]
}


def severity_of(code: str) -> str:
    return EVENT_SEVERITY.get(code, Severity.INFO)


class LicenseStatus(models.TextChoices):
    VERIFIED = "verified", "Verified, not installed"  # stored; install job pending
    INSTALLED = "installed", "Installed"  # the agent holds it
    REMOVED = "removed", "Removed"  # deleted from the agent; kept for the record


# --- health reports, alerts and their deliveries ---------------------------------------
class ReportCadence(models.TextChoices):
    DAILY = "daily", "Daily"  # every day at send_at
    WEEKLY = "weekly", "Weekly"  # on weekday at send_at
    CRONTAB = "crontab", "Custom (crontab)"  # the crontab expression, e.g. "0 7 * * 1-5"


class Weekday(models.IntegerChoices):
    """Cron's numbering (Sunday is 0), listed from Monday."""

    MONDAY = 1, "Monday"
    TUESDAY = 2, "Tuesday"
    WEDNESDAY = 3, "Wednesday"
    THURSDAY = 4, "Thursday"
    FRIDAY = 5, "Friday"
    SATURDAY = 6, "Saturday"
    SUNDAY = 0, "Sunday"


class DeliveryKind(models.TextChoices):
    REPORT = "report", "Health report"
    ALERT = "alert", "Alert"
    EVENT = "event", "Event webhook"


class DeliveryChannel(models.TextChoices):
    EMAIL = "email", "E-mail"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # row written, its send queued (on commit)
    SENDING = "sending", "Sending"  # a worker claimed it (lease_until) and is talking to the server
    RETRYING = "retrying", "Retrying"  # an attempt failed; the next one is queued with backoff
    SENT = "sent", "Sent"  # the mail server accepted it (the webhook answered 2xx)
    FAILED = "failed", "Failed"  # retries spent, or refused for good; last_error says why


OPEN_DELIVERY_STATUSES = (DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value, DeliveryStatus.RETRYING.value)


class AlertKind(models.TextChoices):
    FAILOVER = "failover", "Failover"
    FAILBACK = "failback", "Failback"
    SPLIT_BRAIN = "split_brain", "Split brain"
    UNREACHABLE = "unreachable", "Node unreachable"
    JOB_FAILED = "job_failed", "Job failed"
    LICENSE_EXPIRING = "license_expiring", "License expiring"
    HEARTBEAT_PATH = "heartbeat_path", "Heartbeat path down"
    PARTITION = "partition", "Partition"  # the witnesses refused a takeover, or a primary fenced itself


class AlertStatus(models.TextChoices):
    SENT = "sent", "Sent"  # deliveries queued to every recipient and the webhook
    SUPPRESSED = "suppressed", "Suppressed"  # rate limit: one per kind per subject per interval; counted in the next
    NOBODY = "nobody", "No recipients"  # neither recipients nor a webhook are configured


# The Health Monitor's instance identity on a secondary, one per primary it backs
# (spec §6): slot 1 → mseos3 / 1524 / dg_mse3 / mseop3s, slot 2 → mseos4 / 1525 / …
MAX_PRIMARIES_PER_SECONDARY = 2
FIRST_INSTANCE_NUMBER = 3
FIRST_INSTANCE_PORT = 1524


def instance_identity(slot: int) -> dict[str, object]:
    """Instance database name, port, Dataguard name and alias for a secondary's slot."""
    if not 1 <= slot <= MAX_PRIMARIES_PER_SECONDARY:
        raise ValueError(f"slot must be 1..{MAX_PRIMARIES_PER_SECONDARY}, not {slot}")
    number = FIRST_INSTANCE_NUMBER + slot - 1
    return {
        "instance_db_name": f"mseos{number}",
        "instance_db_port": FIRST_INSTANCE_PORT + slot - 1,
        "dataguard_name": f"dg_mse{number}",
        "primary_db_alias": f"mseop{number}s",
    }


class AuditSource(models.TextChoices):
    """Where a write came from (hapairs.audit)."""

    PAGE = "page", "Page"
    API = "api", "API"
    AGENT = "agent", "Agent"
    SCHEDULE = "schedule", "Schedule"
    CLI = "cli", "Command line"
    WORKER = "worker", "Worker"
