"""REST API under /api/v1 (django-ninja; OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs).

Authentication: ``Authorization: Bearer TOKEN`` (``manage.py api_token USER``) or the
browser session (with CSRF). The same roles as the UI: a Monitor reads, an Operator
also pairs and switches, an Admin also adds appliances. Errors are always
``{"detail": "<sentence>"}`` (plus ``errors`` by field where there are several), with
400 for a request the schema refuses (nothing is queued), 422 for one the rules refuse,
401/403 for who you are, 404, 409 for "not now", never 500. Every operation declares the
refusals it can give in the OpenAPI document, with that error schema.
"""

from __future__ import annotations

import functools
import logging

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, JsonResponse
from ninja import NinjaAPI, Schema
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
        user = services.api_token_user(token, request.META.get("REMOTE_ADDR"))
        if user is not None:
            request.user = user
        return user


UNAUTHENTICATED = "Authentication required: send 'Authorization: Bearer TOKEN' or log in."


def bearer_user(request: HttpRequest):
    """The user of the request's ``Authorization: Bearer TOKEN``, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return services.api_token_user(token.strip(), request.META.get("REMOTE_ADDR"))


def docs_access(view):
    """The OpenAPI document and the docs page: to a logged-in browser, or to a bearer token
    (a client generator fetches the document with the token it calls the API with). Without
    either, the document answers 401 (JSON) and the page sends a browser to the login form."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            user = bearer_user(request)
            if user is None:
                if request.path.endswith(".json") or "Authorization" in request.headers:
                    return JsonResponse({"detail": UNAUTHENTICATED}, status=401)
                return redirect_to_login(request.get_full_path())
            request.user = user
        return view(request, *args, **kwargs)

    return wrapped


api = NinjaAPI(
    title="mseportal API",
    version="1",
    urls_namespace="api-v1",
    auth=[BearerToken(), django_auth],
    docs_decorator=docs_access,
    description=__doc__,
)


class ErrorOut(Schema):
    """Every refusal: a sentence, and the problems by field where there are several."""

    detail: str
    errors: dict[str, list[str]] | None = None


def answers(ok: dict, *refusals: int) -> dict:
    """An operation's responses: its own (``{201: ApplianceOut}``), then the refusals it can
    give, each with the error schema; 401 (no or a wrong token) is always one of them."""
    return {**ok, **{code: ErrorOut for code in sorted({401, *refusals})}}


# --- errors: one shape, the right status, never a 500 for bad input -----------------
@api.exception_handler(services.JobConflict)
def _job_conflict(request, exc: services.JobConflict):
    return api.create_response(request, {"detail": exc.message}, status=409)


@api.exception_handler(services.ServiceError)
def _service_error(request, exc: services.ServiceError):
    # a request the schema takes that the rules refuse (a name taken, an agent that does not
    # answer, a pairing the matrix forbids): 422; refused only for the state things are in
    # (a secondary's slots taken, a role held elsewhere, a concurrent write first): 409; a
    # request the schema refuses is a 400
    status = 409 if exc.conflict else 422
    return api.create_response(request, {"detail": exc.message, "errors": exc.errors}, status=status)


@api.exception_handler(NinjaValidationError)
def _validation_error(request, exc: NinjaValidationError):
    problems = []
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "payload"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid"))
    return api.create_response(request, {"detail": "Invalid request. " + "; ".join(problems)}, status=400)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return api.create_response(request, {"detail": UNAUTHENTICATED}, status=401)


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
