"""The audit trail's filters, shared by the Audit page, its exports and the API."""

from __future__ import annotations

import datetime

from django.db.models import QuerySet
from django.utils import timezone

from hapairs.choices import AuditSource
from hapairs.models import AuditEntry

FILTERS = ("day", "since", "until", "actor", "source", "action", "object")
EXPORT_LIMIT = 100_000  # rows in one export; narrow the filters for more


class AuditFilterError(ValueError):
    pass


def _day(value: str, name: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise AuditFilterError(f"{name}={value!r} is not a date (YYYY-MM-DD).") from None


def _start(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


def audit_entries(params) -> QuerySet[AuditEntry]:
    """Entries matching ``params`` (a QueryDict or dict of strings), newest first. Days are
    in the portal's time zone; ``until`` is inclusive. Bad values raise AuditFilterError."""
    rows = AuditEntry.objects.all()
    get = {name: (params.get(name) or "").strip() for name in FILTERS}
    if get["day"]:
        day = _day(get["day"], "day")
        rows = rows.filter(at__gte=_start(day), at__lt=_start(day + datetime.timedelta(days=1)))
    if get["since"]:
        rows = rows.filter(at__gte=_start(_day(get["since"], "since")))
    if get["until"]:
        rows = rows.filter(at__lt=_start(_day(get["until"], "until") + datetime.timedelta(days=1)))
    if get["actor"]:
        rows = rows.filter(actor_name=get["actor"])
    if get["source"]:
        if get["source"] not in AuditSource.values:
            raise AuditFilterError(f"source={get['source']!r}: one of {', '.join(AuditSource.values)}.")
        rows = rows.filter(source=get["source"])
    if get["action"]:
        # "pair" matches every pair.* action; "pair.switchover" that one
        action = get["action"]
        rows = rows.filter(action=action) if "." in action else rows.filter(action__startswith=action + ".")
    if get["object"]:
        rows = rows.filter(object_repr__icontains=get["object"])
    return rows.order_by("-at", "-id")


def audit_row(entry: AuditEntry) -> dict:
    """One entry as the exports and the API give it."""
    return {
        "id": entry.pk,
        "at": entry.at.isoformat(),
        "actor": entry.actor_name,
        "source": entry.source,
        "request_id": entry.request_id,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "object": entry.object_repr,
        "reason": entry.reason,
        "before": entry.before,
        "after": entry.after,
    }
