"""The one unauthenticated URL: /healthz for load balancers and `make run`."""

from __future__ import annotations

import sys

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from hapairs import health


@require_GET
@never_cache
@login_not_required
def healthz(request: HttpRequest) -> JsonResponse:
    """No login. Says nothing secret."""
    checks = {"database": health.database_state(), "broker": health.broker_state()}
    healthy = all(check["status"] == "ok" for check in checks.values())
    return JsonResponse({"status": "ok" if healthy else "degraded", **checks}, status=200 if healthy else 503)


UNAVAILABLE = {
    "database": (
        "The portal's database is unavailable",
        "The portal cannot reach its database just now. Nothing you saved before is lost; what you were "
        "doing was not saved. The pages work again as soon as the database is back: try again in a moment.",
    ),
    "broker": (
        "The portal's task broker is unavailable",
        "The portal cannot reach its task broker just now, so jobs cannot be handed to the workers. "
        "Try again in a moment; jobs already recorded start once it is back.",
    ),
}


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a database or broker that cannot be reached is a 503 that says so (HTML,
    or the API's JSON error), never the bare 500 page; anything else is Django's 500. It
    touches neither (no template with the user, no session): they may be what is down."""
    what = health.dependency_of(sys.exc_info()[1])
    if what is None:
        return defaults.server_error(request)
    title, text = UNAVAILABLE[what]
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": f"{title}: {text}"}, status=503)
    else:
        page = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · mseportal</title>'
            f'<meta http-equiv="refresh" content="15"></head><body><main><h1>{escape(title)}</h1><p>{escape(text)}</p>'
            f'<p><a href="{escape(request.get_full_path())}">Try again</a></p></main></body></html>'
        )
        response = HttpResponse(page, status=503)
    response["Retry-After"] = "15"
    return response
