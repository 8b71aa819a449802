"""GET /metrics: the portal's Prometheus metrics (hapairs.metrics)."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from hapairs import metrics as portal_metrics
from hapairs.api.core import bearer_user

REFUSED = (
    "The metrics need 'Authorization: Bearer TOKEN' (an API token: `manage.py api_token USER`), "
    "or a scrape from a network in MSEPORTAL_METRICS_NETWORKS."
)


def _from_allowed_network(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network) for network in settings.METRICS_NETWORKS)


@require_GET
@never_cache
@login_not_required
def metrics(request: HttpRequest) -> HttpResponse:
    """To a Prometheus server: with an API token of any role (the metrics say no more than
    the pages a Monitor reads), or from a network the settings allow."""
    if not (request.user.is_authenticated or _from_allowed_network(request) or bearer_user(request) is not None):
        response = JsonResponse({"detail": REFUSED}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="mseportal metrics"'
        return response
    body, content_type = portal_metrics.exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
