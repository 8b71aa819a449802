"""A pair's Events Log: newest first, in keyset pages (the ``next`` of a page reads the one
after it, whatever the log's size), filtered by code, severity and time."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from django.core import signing
from django.db.models import Q
from ninja import Query, Router, Schema
from ninja.errors import HttpError
from pydantic import BeforeValidator

from hapairs import selectors
from hapairs.api.core import answers, appliance_or_404, pair_of_or_404
from hapairs.choices import EventCode, Severity
from hapairs.models import HAEvent
from hapairs.selectors.lists import EVENTS_ORDERING

router = Router()
CURSOR_SALT = "hapairs.api.events"  # a cursor is signed: a client cannot make one up


class WhyOut(Schema):
    """A decision nobody asked for: the rule that fired (stable, dotted), its sentence, what it saw."""

    rule: str
    text: str
    inputs: dict[str, str | int | float | bool | None]


class EventOut(Schema):
    id: int
    code: str
    description: str
    generated_by: str
    timestamp: datetime
    remarks: str
    severity: str
    job: int | None  # the job that caused it
    requested_by: str | None  # who asked for that job
    reason: str | None  # and why
    why: WhyOut | None  # an agent's or the portal's own decision: why it was taken
    alert_decision: WhyOut | None  # the alert it raised: why it was sent, held back or sent to nobody


class EventPageOut(Schema):
    events: list[EventOut]
    next: str | None  # pass it as ?after= for the page after this one; null on the last page


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    """A moment as the schema's date-time says (RFC 3339, its offset included), and nothing
    else pydantic would take for one (a number of seconds, a bare date)."""
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError("not an RFC 3339 date-time, such as 2026-12-01T08:00:00Z")
    return value


Moment = Annotated[datetime, BeforeValidator(_rfc3339)]


@router.get(
    "/appliances/{name}/ha/events",
    response=answers({200: EventPageOut}, 400, 404, 422),
    summary="The pair's Events Log, newest first",
)
def pair_events(
    request,
    name: str,
    limit: int = Query(50, ge=1, le=500),
    after: str | None = Query(None, max_length=500, description="The `next` of the page before."),
    code: EventCode | None = Query(None),
    severity: Severity | None = Query(None),
    since: Moment | None = Query(None, description="Events at or after this time."),
    until: Moment | None = Query(None, description="Events before this time."),
):
    pair = pair_of_or_404(appliance_or_404(name))
    key = None
    if after:
        try:
            key = selectors.seek_key_parse(HAEvent, EVENTS_ORDERING, signing.loads(after, salt=CURSOR_SALT))
        except (signing.BadSignature, ValueError):
            raise HttpError(422, "after: not the `next` of a page of this log.") from None
    if since is not None and until is not None and since >= until:
        raise HttpError(422, "since: must be before until.")
    where = Q()
    if code is not None:
        where &= Q(code=code)
    if severity is not None:
        where &= Q(severity=severity)
    if since is not None:
        where &= Q(timestamp__gte=since)
    if until is not None:
        where &= Q(timestamp__lt=until)
    page = selectors.pair_events_seek(pair, selectors.PageWhere(key=key, limit=limit), filters=where)
    if page.moved_to:  # the cursor's row is past the end (deleted since): nothing after it
        return {"events": [], "next": None}
    rows = page.rows
    following = None
    if page.more_after and rows:
        following = signing.dumps(selectors.seek_key(rows[-1], EVENTS_ORDERING), salt=CURSOR_SALT)
    return {
        "events": [
            {
                **{
                    field: row[field]
                    for field in ("id", "code", "description", "generated_by", "timestamp", "remarks", "severity")
                },
                "job": row["job_id"],
                "requested_by": row["requested_by"],
                "reason": row["reason"],
                "why": row["why"],
                "alert_decision": row["alert_decision"],
            }
            for row in rows
        ],  # fmt: skip
        "next": following,
    }
