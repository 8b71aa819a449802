"""REST API under /api/v1 (django-ninja; OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs).

Authentication: ``Authorization: Bearer TOKEN`` (``manage.py api_token USER``) or the
browser session (with CSRF). The same roles as the UI: a Monitor reads, an Operator
also pairs and switches, an Admin also adds appliances. Errors are always
``{"detail": "<sentence>"}`` (plus ``errors`` by field where there are several), with
400 for refused input, 401/403 for who you are, 404, 409 for "not now", never 500.
"""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer, django_auth

from hapairs import (
    roles,
    selectors,
    services,
)
from hapairs.models import Appliance, HAPair

log = logging.getLogger(__name__)


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str):
        user = services.api_token_user(token)
        if user is not None:
            request.user = user
        return user


api = NinjaAPI(
    title="mseportal API",
    version="1",
    urls_namespace="api-v1",
    auth=[BearerToken(), django_auth],
    docs_decorator=login_required,
    description=__doc__,
)


# --- errors: one shape, the right status, never a 500 for bad input -----------------
@api.exception_handler(services.JobConflict)
def _job_conflict(request, exc: services.JobConflict):
    return api.create_response(request, {"detail": exc.message}, status=409)


@api.exception_handler(services.ServiceError)
def _service_error(request, exc: services.ServiceError):
    return api.create_response(request, {"detail": exc.message, "errors": exc.errors}, status=400)


@api.exception_handler(NinjaValidationError)
def _validation_error(request, exc: NinjaValidationError):
    problems = []
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "payload"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid"))
    return api.create_response(request, {"detail": "Invalid request. " + "; ".join(problems)}, status=400)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return api.create_response(
        request, {"detail": "Authentication required: send 'Authorization: Bearer TOKEN' or log in."}, status=401
    )


def require(request: HttpRequest, permission: str, what: str) -> None:
    refusal = roles.refusal(request.auth, permission, what)
    if refusal:
        raise HttpError(403, refusal)


def appliance_or_404(name: str) -> Appliance:
    appliance = Appliance.objects.filter(name=name).first()
    if appliance is None:
        raise HttpError(404, f"No appliance named {name!r}.")
    return appliance


def pair_of_or_404(appliance: Appliance) -> HAPair:
    pair = selectors.pair_for(appliance)
    if pair is None:
        raise HttpError(404, f"{appliance.name} is not part of an HA pair.")
    return pair
