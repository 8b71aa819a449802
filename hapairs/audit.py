"""The audit trail: every write the services make, with who, from where, under which
request, why, and the fields before and after.

The services' own rows (``AuditEntry``), not a history library: the services are already
the one place writes happen (DESIGN.md), they know the reason and the action's name
("pair.switchover", not "HAPair changed"), and the entry goes in the write's own
transaction. A model-history library (django-simple-history, django-pghistory) would record
every row change, but not why or as what action, and would need the same context passed
to it anyway.

Who and where come from the context: the middleware sets it for each request (source page
or API, ``X-Request-ID`` or a new id), the ingest for agents, Celery for the scheduled and
worker tasks, the management commands for the command line. A service records with
``audited`` (a decorator) or ``audit_record``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import decimal
import functools
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from hapairs.choices import AuditSource

SECRET_FIELD = re.compile(r"password|secret|key_hash|token|private", re.IGNORECASE)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass
class AuditContext:
    source: str = AuditSource.WORKER
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    user: Any = None  # a user, or a callable giving one (the request's lazy user)
    name: str = ""  # who, when there is no user (an agent's HM IP, "schedule")


_context: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar("audit_context", default=None)


def current() -> AuditContext:
    return _context.get() or AuditContext()


@contextlib.contextmanager
def audit_context(source: str, *, request_id: str = "", user: Any = None, name: str = ""):
    """Writes inside are recorded as coming from ``source``."""
    token = _context.set(AuditContext(source=source, request_id=request_id or uuid.uuid4().hex, user=user, name=name))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new one."""
    return header if header and REQUEST_ID.match(header) else uuid.uuid4().hex


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def snapshot(instance: models.Model | None) -> dict[str, Any] | None:
    """Its concrete fields as JSON values, secrets left out (by name)."""
    if instance is None:
        return None
    out: dict[str, Any] = {}
    for model_field in instance._meta.concrete_fields:
        if SECRET_FIELD.search(model_field.name):
            continue
        out[model_field.attname] = _plain(getattr(instance, model_field.attname))
    return out


def _fresh(instance: models.Model | None) -> models.Model | None:
    if instance is None or instance.pk is None:
        return None
    return type(instance)._default_manager.filter(pk=instance.pk).first()


def changed_only(before: dict | None, after: dict | None) -> tuple[dict | None, dict | None]:
    """The fields that differ (an update), or everything (a create or a delete)."""
    if before is None or after is None:
        return before, after
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def audit_record(
    action: str,
    *,
    target: models.Model | None,
    before: dict | None,
    after: dict | None,
    reason: str = "",
    by: Any = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    actor_name: str = "",
):
    from hapairs.models import AuditEntry

    ctx = current()
    user = by if by is not None else (ctx.user() if callable(ctx.user) else ctx.user)
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    name = user.get_username() if user is not None else (actor_name or ctx.name or ctx.source)
    return AuditEntry.objects.create(
        at=timezone.now(),
        actor=user,
        actor_name=name[:150],
        source=ctx.source,
        request_id=ctx.request_id[:64],
        action=action,
        object_type=object_type or (target._meta.model_name if target is not None else ""),
        object_id=object_id or (str(target.pk) if target is not None and target.pk is not None else ""),
        object_repr=(object_repr or (str(target) if target is not None else ""))[:200],
        reason=reason,
        before=before,
        after=after,
    )


def audit_made(after: dict | None, *rows: models.Model) -> dict:
    """``after`` naming the rows a write made (a job it queued)."""
    return {**(after or {}), "made": [f"{row._meta.model_name} #{row.pk}" for row in rows]}


def _models_in(result: Any) -> list[models.Model]:
    if isinstance(result, models.Model):
        return [result]
    if isinstance(result, (tuple, list)):
        return [item for item in result if isinstance(item, models.Model)]
    return []


def audited(action: str, *, target: str | None = None, find=None, unless_unchanged: bool = False):
    """Record the decorated service's write, in a transaction around the whole service (so
    only on services that talk to no agent: those record inside their own transaction, with
    ``audit_record``, after the network). ``target`` names the keyword argument holding
    the object written (its fields read before and after), or ``find(kwargs)`` finds it;
    with neither, the object the service returns is the one created. The rows the service
    returns (a job it queued, say) are listed in ``after["made"]``. Nothing is recorded
    when the service refuses (its exception rolls the write and the entry back), nor, with
    ``unless_unchanged``, when it changed and made nothing (a schedule that was not due)."""

    def wrap(func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            with transaction.atomic():
                obj = find(kwargs) if find else (kwargs.get(target) if target else None)
                obj = _fresh(obj) if obj is not None else None
                before = snapshot(obj)
                result = func(*args, **kwargs)
                made = _models_in(result)
                if obj is None and made:
                    obj, before = made[0], None
                    after = snapshot(_fresh(obj))
                else:
                    after = snapshot(_fresh(obj) if obj is not None else None)
                    if before is not None and after is None:
                        pass  # deleted
                    else:
                        before, after = changed_only(before, after)
                others = [m for m in made if m is not obj]
                if unless_unchanged and not others and not before and not after:
                    return result
                if others:
                    after = audit_made(after, *others)
                audit_record(
                    action,
                    target=obj,
                    before=before,
                    after=after,
                    reason=str(kwargs.get("reason") or ""),
                    by=kwargs.get("by"),
                )
                return result

        return run

    return wrap


ADMIN_ACTIONS = {1: "added", 2: "changed", 3: "deleted"}  # django.contrib.admin.models ADDITION, CHANGE, DELETION


def admin_logged(sender, instance, created: bool, **kwargs) -> None:
    """The Django admin's own writes (users, groups, anything it edits) are in the audit trail
    too, from its LogEntry: written in the admin's transaction, so with the change itself.
    The admin says which fields changed, not their values; secrets are never among them
    (a password change is "changed password", with no value)."""
    if not created:
        return
    content_type = instance.content_type
    model = content_type.model if content_type else "object"
    audit_record(
        f"admin.{model}.{ADMIN_ACTIONS.get(instance.action_flag, 'changed')}"[:64],
        target=None,
        before=None,
        after={"change": instance.get_change_message() or ADMIN_ACTIONS.get(instance.action_flag, "")},
        by=instance.user,
        object_type=model[:32],
        object_id=str(instance.object_id or "")[:64],
        object_repr=instance.object_repr,
    )
