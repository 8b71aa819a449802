"""REST API under /api/v1 (django-ninja; OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs).

Authentication: ``Authorization: Bearer TOKEN`` (``manage.py api_token USER``) or the
browser session (with CSRF). The same roles as the UI: a Monitor reads, an Operator
also pairs and switches, an Admin also adds appliances. Errors are always
``{"detail": "<sentence>"}`` (plus ``errors`` by field where there are several), with
400 for refused input, 401/403 for who you are, 404, 409 for "not now", never 500.
"""

from hapairs.api import appliances, audit, drills, events, ingest, jobs, licenses, reports
from hapairs.api.core import api

for module in (appliances, audit, drills, events, jobs, licenses, reports, ingest):
    api.add_router("", module.router)

__all__ = ["api"]
