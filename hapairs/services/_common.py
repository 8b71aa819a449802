"""What every service module shares: the error type, the actor's name, events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import OperationalError, connection
from django.utils import timezone

from hapairs.choices import EventCode, severity_of
from hapairs.models import Appliance, HAEvent, HAPair

PORTAL = "mseportal"


class ServiceError(Exception):
    """A write was refused; ``message`` is for the operator, ``field`` for the form.
    ``conflict``: refused only for the state things are in now (a secondary's slots taken, a
    role held in another pair, a concurrent write first), so it may pass once that changes
    (the API's 409); otherwise the request itself breaks a rule (422)."""

    def __init__(
        self,
        message: str,
        *,
        field: str = "__all__",
        errors: dict[str, list[str]] | None = None,
        conflict: bool = False,
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = errors or {field: [message]}
        self.conflict = conflict


def rows_lock(*appliances: Appliance | None, pair: HAPair | None = None, no_key: bool = False) -> None:
    """Lock a pair's rows in the one order every writer uses: its appliances by primary key,
    then the pair (the poller's ``status_record`` order). A writer that locked the pair first
    and then an appliance deadlocked with a poll round holding that appliance and waiting for
    the pair (seen in CI: maintenance mode switched while the poller recorded a node down)."""
    nodes = {*(a.pk for a in appliances if a is not None), *((pair.primary_id, pair.secondary_id) if pair else ())}
    list(
        Appliance.objects.select_for_update(no_key=no_key)
        .filter(pk__in=[pk for pk in nodes if pk is not None])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if pair is not None:
        list(HAPair.objects.select_for_update(no_key=no_key).filter(pk=pair.pk).values_list("pk", flat=True))


log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIED_SQLSTATES = {"40P01", "40001"}  # deadlock detected; serialization failure


def is_deadlock(exc: BaseException) -> bool:
    """PostgreSQL chose this transaction as a deadlock's (or a serialization conflict's)
    victim: the psycopg error Django's OperationalError wraps says so by its SQLSTATE."""
    return getattr(exc.__cause__, "sqlstate", None) in RETRIED_SQLSTATES


def deadlock_retried(write: Callable[[], T], *, what: str, attempts: int = 4) -> T:
    """Run ``write`` (its own transaction), again when PostgreSQL made it a deadlock's victim.

    Every writer locks rows in one order (rows_lock), but a foreign-key check takes its KEY
    SHARE locks in the constraints' order, so a row insert can still meet a writer of the
    pair in a cycle; PostgreSQL then aborts one of the two and the other goes through. The
    victim's work was rolled back whole, so it is simply done again (CI saw a job's failed
    event and a poll round die of it). Inside an outer transaction nothing is retried: that
    transaction is aborted, and its owner must start again."""
    for attempt in range(1, attempts):
        try:
            return write()
        except OperationalError as exc:
            if not is_deadlock(exc) or connection.in_atomic_block:
                raise
            log.warning("%s: chosen as a deadlock's victim; trying again (%d of %d)", what, attempt + 1, attempts)
            time.sleep(0.05 * attempt)
    return write()  # the last attempt: its error is the caller's


def pair_lock(pair: HAPair) -> HAPair:
    """The pair, fresh from the database and locked for update, its appliances first (rows_lock)."""
    rows_lock(pair=pair)
    return HAPair.objects.get(pk=pair.pk)


def actor_name(by: AbstractBaseUser | None) -> str:
    return by.get_username() if by is not None else PORTAL


def service_error_from(exc: ValidationError) -> ServiceError:
    errors = {name: [str(m) for m in messages] for name, messages in exc.message_dict.items()}
    first_field, first_messages = next(iter(errors.items()))
    return ServiceError(" ".join(m for ms in errors.values() for m in ms), field=first_field, errors=errors)


# --- events ---------------------------------------------------------------------------
def event_record(
    *,
    code: str,
    generated_by: str,
    description: str = "",
    pair: HAPair | None = None,
    appliance: Appliance | None = None,
    remarks: str = "",
    severity: str | None = None,
    timestamp: datetime | None = None,
    job=None,
    generation: int | None = None,
    why: dict | None = None,
) -> HAEvent:
    """A portal-side event (agent events with sequence numbers are ingested elsewhere).
    ``code`` (an ``EventCode``) says what happened; the description defaults to its label
    and the severity to the code's."""
    event = HAEvent.objects.create(
        code=EventCode(code).value,
        description=(description or EventCode(code).label)[:300],
        generated_by=generated_by[:128],
        pair=pair,
        appliance=appliance,
        remarks=remarks[:500],
        severity=severity or severity_of(code),
        timestamp=timestamp or timezone.now(),
        job=job,
        generation=generation,
        why=why,
    )
    if event.code in settings.EVENT_WEBHOOKS:
        from hapairs.services.webhooks import event_webhooks_send  # services import this module

        event_webhooks_send([event])
    return event
