"""The audit trail (Admin, Operator): the Audit page's rows and filters."""

from __future__ import annotations

from typing import Any, Literal

from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from hapairs import roles
from hapairs.api.core import answers, require
from hapairs.selectors.audit import AuditFilterError, audit_entries, audit_row

router = Router()
DATE = r"^(\d{4}-\d{2}-\d{2})?$"


class AuditOut(Schema):
    id: int
    at: str
    actor: str
    source: str
    request_id: str
    action: str
    object_type: str
    object_id: str
    object: str
    reason: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditFilters(Schema):
    day: str = Field("", pattern=DATE, description="YYYY-MM-DD, the portal's time zone")
    since: str = Field("", pattern=DATE, description="YYYY-MM-DD, from the start of that day")
    until: str = Field("", pattern=DATE, description="YYYY-MM-DD, to the end of that day")
    actor: str = ""
    source: Literal["page", "api", "agent", "schedule", "cli", "worker"] | None = None
    action: str = ""
    object: str = ""


@router.get("/audit", response=answers({200: list[AuditOut]}, 400, 403, 422))
def list_audit(
    request,
    filters: Query[AuditFilters],
    limit: int = Query(100, ge=1, le=1000),
    before_id: int | None = Query(None, ge=1, le=2**63 - 1, description="the page after the entry with this id"),
):
    """Newest (by id) first; page with ``before_id`` (the last id of the previous page)."""
    require(request, roles.AUDIT, "read the audit trail")
    try:
        rows = audit_entries({k: "" if v is None else str(v) for k, v in filters.dict().items()})
    except AuditFilterError as exc:
        raise HttpError(422, str(exc)) from None  # well-formed, but no such day
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    return [audit_row(entry) for entry in rows.order_by("-id")[:limit]]
