"""Webhooks per event code (``MSEPORTAL_EVENT_WEBHOOKS``): each stored event of a listed
code is POSTed to its webhooks, as a Delivery (queued after the commit, retried with backoff,
in the deliveries log), signed like the alert webhook (hapairs.delivery)."""

from __future__ import annotations

import json

from django.conf import settings
from django.db.models import Q

from hapairs.choices import DeliveryChannel, DeliveryKind
from hapairs.models import HAEvent
from hapairs.services.deliveries import delivery_create


def event_payload(event: HAEvent) -> dict:
    pair = event.pair
    return {
        "event": event.code,
        "id": event.pk,
        "seq": event.seq,
        "description": event.description,
        "generated_by": event.generated_by,
        "timestamp": event.timestamp.isoformat(),
        "remarks": event.remarks,
        "severity": event.severity,
        "generation": event.generation,
        "appliance": event.appliance.name if event.appliance else None,
        "pair": {"primary": pair.primary.name, "secondary": pair.secondary.name} if pair else None,
        "job": event.job_id,
    }


def event_webhooks_send(events: list[HAEvent]) -> int:
    """Queue the webhooks of these stored events (once each: the delivery's key); the count."""
    hooks = settings.EVENT_WEBHOOKS
    queued = 0
    for event in events:
        for url in hooks.get(event.code, ()):
            _, created = delivery_create(
                key=f"event:{event.pk}:webhook:{url}"[:200],
                kind=DeliveryKind.EVENT,
                channel=DeliveryChannel.WEBHOOK,
                recipients=[url],
                subject=f"[mseportal] {event.description}",
                body_text=json.dumps(event_payload(event), sort_keys=True),
            )
            queued += created
    return queued


def event_webhooks_for_ingested(rows: list[HAEvent]) -> None:
    """Agent events just stored in bulk (without their ids): one query, only when one of
    them has a webhook."""
    hooks = settings.EVENT_WEBHOOKS
    wanted = [(row.appliance_id, row.seq) for row in rows if row.code in hooks]
    if not wanted:
        return
    which = Q()
    for appliance_id, seq in wanted:
        which |= Q(appliance_id=appliance_id, seq=seq)
    stored = HAEvent.objects.filter(which).select_related("appliance", "pair__primary", "pair__secondary")
    event_webhooks_send(list(stored.order_by("appliance_id", "seq")))
