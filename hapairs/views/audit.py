"""The Audit page: who did what, from where, why, and the fields before and after, with
filters, and the same rows as CSV or JSON to take away (Admin and Operator)."""

from __future__ import annotations

import csv
import io
import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from hapairs import roles
from hapairs.choices import AuditSource
from hapairs.selectors.audit import EXPORT_LIMIT, FILTERS, AuditFilterError, audit_entries, audit_row
from hapairs.views._common import Pager, requires

CSV_COLUMNS = ("id", "at", "actor", "source", "request_id", "action", "object_type", "object_id", "object", "reason")


@require_GET
@requires(roles.AUDIT, "read the audit trail")
def audit_list(request: HttpRequest) -> HttpResponse:
    filters = {name: request.GET.get(name, "") for name in FILTERS}
    fmt = request.GET.get("format", "")
    try:
        rows = audit_entries(request.GET)
    except AuditFilterError as exc:
        if fmt in {"csv", "json"}:
            return JsonResponse({"detail": str(exc)}, status=400)
        return render(
            request,
            "hapairs/audit_list.html",
            {"error": str(exc), "filters": filters, "sources": AuditSource.choices},
            status=400,
        )
    if fmt == "csv":
        return _csv(rows[:EXPORT_LIMIT])
    if fmt == "json":
        return _json(rows[:EXPORT_LIMIT])
    pager = Pager(request, rows.count())
    page = list(rows[pager.offset : pager.offset + pager.per_page])
    query = request.GET.copy()
    query.pop("page", None)
    context = {"entries": page, "pager": pager, "filters": filters, "sources": AuditSource.choices}
    context["export_query"] = query.urlencode()
    return render(request, "hapairs/audit_list.html", context)


def _filename(ext: str) -> str:
    return f"mseportal-audit-{timezone.localtime():%Y%m%d-%H%M%S}.{ext}"


def _csv(rows) -> HttpResponse:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, "before", "after"])
    for entry in rows.iterator(chunk_size=2000):
        row = audit_row(entry)
        cells = [row[name] for name in CSV_COLUMNS]
        # a cell a spreadsheet would run as a formula is quoted (CSV injection)
        cells = [f"'{c}" if isinstance(c, str) and c[:1] in "=+-@\t\r" else c for c in cells]
        writer.writerow([*cells, json.dumps(row["before"], sort_keys=True), json.dumps(row["after"], sort_keys=True)])
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_filename("csv")}"'
    return response


def _json(rows) -> HttpResponse:
    body = json.dumps({"entries": [audit_row(entry) for entry in rows.iterator(chunk_size=2000)]}, indent=1)
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{_filename("json")}"'
    return response
