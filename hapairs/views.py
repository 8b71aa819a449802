"""Pages. One view per page; HTMX requests get the page's named partial."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from hapairs import health
from hapairs.models import Appliance, HAPair, Job


@require_GET
@never_cache
@login_not_required
def healthz(request: HttpRequest) -> JsonResponse:
    """No login: load balancers and `make run` ask it. Says nothing secret."""
    checks = {"database": health.database_state(), "broker": health.broker_state()}
    healthy = all(check["status"] == "ok" for check in checks.values())
    return JsonResponse({"status": "ok" if healthy else "degraded", **checks}, status=200 if healthy else 503)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    context = {
        "appliance_count": Appliance.objects.count(),
        "pair_count": HAPair.objects.count(),
        "active_job_count": Job.objects.filter(status__in=("pending", "running")).count(),
        "appliances": Appliance.objects.select_related("ha_pair_as_primary__secondary").order_by("name")[:50],
    }
    return render(request, "hapairs/home.html", context)
