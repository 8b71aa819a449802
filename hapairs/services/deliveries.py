"""Deliveries: one row per message (unique key), claimed before each attempt.

The row is written first and its send queued after commit (``tasks.delivery_send``, by ``dispatch``).
A worker *claims* it with a conditional update (pending/retrying → sending), so two
workers, a retry and a resume never send the same message twice; once sent, every later
task finds nothing to claim. Each attempt is appended to ``attempt_log``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from hapairs import dispatch
from hapairs.audit import audited
from hapairs.choices import DeliveryStatus
from hapairs.models import Alert, Delivery, ReportSchedule
from hapairs.services._common import ServiceError

LEASE = timedelta(minutes=5)  # a send takes seconds (SMTP timeout 10 s); past this the worker is gone
STALE = timedelta(minutes=2)  # a queued send not started by then has lost its message
ATTEMPT_LOG_MAX = 50


def delivery_queue(delivery: Delivery) -> None:
    """Send it from a worker once the surrounding transaction commits."""
    dispatch.on_commit(dispatch.DELIVERY_SEND, delivery.pk)


def delivery_create(
    *,
    key: str,
    kind: str,
    channel: str,
    recipients: list[str],
    subject: str,
    body_text: str,
    body_html: str = "",
    schedule: ReportSchedule | None = None,
    alert: Alert | None = None,
    by: AbstractBaseUser | None = None,
    queue: bool = True,
) -> tuple[Delivery, bool]:
    """The message, once per ``key`` (a second call returns the first row, unqueued)."""
    with transaction.atomic():
        delivery, created = Delivery.objects.get_or_create(
            key=key[:200],
            defaults={
                "kind": kind,
                "channel": channel,
                "recipients": list(recipients),
                "subject": subject[:300],
                "body_text": body_text,
                "body_html": body_html,
                "schedule": schedule,
                "alert": alert,
                "requested_by": by,
            },
        )
        if created and queue:
            delivery_queue(delivery)
    return delivery, created


def delivery_claim(*, delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """Take the delivery for one attempt; None if it is sent, being sent, or gone."""
    now = now or timezone.now()
    claimed = Delivery.objects.filter(
        pk=delivery_id, status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING]
    ).update(status=DeliveryStatus.SENDING, attempts=F("attempts") + 1, lease_until=now + LEASE, next_attempt_at=None)
    if not claimed:
        return None
    return Delivery.objects.get(pk=delivery_id)


def delivery_attempt_record(
    *, delivery: Delivery, error: str = "", final: bool = False, retry_in: float | None = None
) -> str:
    """Write what the attempt the caller claimed came to: sent, retrying, or failed."""
    now = timezone.now()
    entry = {"n": delivery.attempts, "at": now.isoformat(), "ok": not error, "error": error[:1000]}
    values: dict = {"attempt_log": [*delivery.attempt_log, entry][-ATTEMPT_LOG_MAX:], "lease_until": None}
    if not error:
        values.update(status=DeliveryStatus.SENT, sent_at=now, last_error="")
    elif final or retry_in is None:
        values.update(status=DeliveryStatus.FAILED, last_error=error[:4000])
    else:
        values.update(
            status=DeliveryStatus.RETRYING, last_error=error[:4000], next_attempt_at=now + timedelta(seconds=retry_in)
        )
    with transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(**values)
        if not error and delivery.schedule_id:
            ReportSchedule.objects.filter(pk=delivery.schedule_id).update(last_sent_at=now)
    for name, value in values.items():
        setattr(delivery, name, value)
    return values["status"]


@audited("delivery.retry", target="delivery")
def delivery_retry(*, delivery: Delivery, by: AbstractBaseUser | None = None) -> Delivery:
    """Send a failed delivery once more (the Reports page's Retry, after the mail server is fixed)."""
    with transaction.atomic():
        if not Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.FAILED).update(
            status=DeliveryStatus.PENDING, next_attempt_at=None
        ):
            delivery.refresh_from_db(fields=["status"])
            raise ServiceError(
                f"Only a failed delivery can be retried; #{delivery.pk} is {delivery.get_status_display().lower()}."
            )
        delivery_queue(delivery)
    delivery.refresh_from_db()
    return delivery


def deliveries_resume(*, now: datetime | None = None) -> list[int]:
    """Beat: deliveries whose queue message was lost or whose worker died mid-send.

    A worker killed while sending leaves the row ``sending``; after its lease the row is
    put back to ``retrying`` (the server may or may not have taken that one message: the
    Message-ID stays the same, so a mail client shows it once)."""
    now = now or timezone.now()
    Delivery.objects.filter(status=DeliveryStatus.SENDING, lease_until__lt=now).update(
        status=DeliveryStatus.RETRYING,
        lease_until=None,
        next_attempt_at=now - STALE,
        last_error="The worker sending this stopped before it finished; sending again.",
    )
    return list(
        Delivery.objects.filter(
            Q(status=DeliveryStatus.PENDING, created_at__lt=now - STALE)
            | Q(status=DeliveryStatus.RETRYING, next_attempt_at__lte=now - STALE)
        ).values_list("pk", flat=True)[:500]
    )
