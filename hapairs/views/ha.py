"""High availability: configure, current status, switchover/failback, maintenance, overview.

Every write goes through ``hapairs.services``; these views only collect input, show the
services' refusals next to the right field and never render a password back.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hapairs import crypto, dispatch, drills, licenses, roles, selectors, services
from hapairs.choices import ACTIVE_JOB_STATUSES, WitnessMode
from hapairs.forms import ActionReasonForm, ConfigureHAForm, MaintenanceForm, ReasonForm, UpdateHAForm
from hapairs.models import FAILOVER_WAIT_DEFAULT, Appliance, HAEvent, HAPair, Job, SecondaryListing, Tally
from hapairs.selectors.troubles import sync_stalled, troubles
from hapairs.views._common import (
    DEVICE_TYPES,
    HEARTBEATS,
    SeekPager,
    check_role,
    posted,
    render_page,
    render_polled,
    requires,
    url_of_name,
)

PENDING_KEY = "ha-configure-pending"  # {primary pk: the confirmation asked for}
PENDING_KEPT = 8  # confirmations a session may hold at once (tabs on as many primaries)


def _pending_take(request: HttpRequest, primary: Appliance, token: str | None) -> dict | None:
    """The confirmation pending for this primary, if ``token`` is its token (taken: a token is
    used once; None: the token is stale or there is none, and nothing is taken). Keyed by
    primary, so two tabs configuring two primaries each keep their own; ``token=None``
    drops this primary's (Cancel)."""
    pending = request.session.get(PENDING_KEY)
    if not isinstance(pending, dict) or "token" in pending:  # none, or the one-per-session shape of before
        return None
    found = pending.get(str(primary.pk))
    if found is None or (token is not None and found.get("token") != token):
        return None
    del pending[str(primary.pk)]
    if pending:
        request.session[PENDING_KEY] = pending  # a changed dict inside the session: save it
    else:
        del request.session[PENDING_KEY]
    return found


def _pending_put(request: HttpRequest, primary: Appliance, confirmation: dict) -> None:
    pending = request.session.get(PENDING_KEY)
    if not isinstance(pending, dict) or "token" in pending:
        pending = {}
    pending.pop(str(primary.pk), None)
    pending[str(primary.pk)] = confirmation
    while len(pending) > PENDING_KEPT:  # the oldest first (dicts keep their order)
        pending.pop(next(iter(pending)))
    request.session[PENDING_KEY] = pending


# --- Configure High Availability Parameters -------------------------------------------
def _pairing_check(primary: Appliance, data: dict, upload) -> services.PairingCheck:
    """The service's own preconditions (``services.ha_configure_check``, which the Save asks
    too) on what the form holds so far."""
    license = None
    if upload is not None:
        license = (upload.name, upload.read(licenses.MAX_BYTES + 1))
        upload.seek(0)
    return services.ha_configure_check(
        primary=primary,
        secondary_name=data["secondary_name"],
        secondary_ip=data["secondary_ip"],
        secondary_password=data.get("secondary_password") or "",
        failover_wait=data.get("failover_wait", FAILOVER_WAIT_DEFAULT),
        activation_license=license,
        delete_activation_license=bool(data.get("delete_activation_license")),
        witnesses=data.get("witnesses") or [],
        witness_password=data.get("witness_password") or "",
        witness_mode=data.get("witness_mode") or WitnessMode.SAFE,
    )


def _apply_errors(form, errors: dict[str, list[str]]) -> None:
    for field, problems in errors.items():
        for problem in problems:
            form.add_error(field if field in form.fields else None, problem)


@require_http_methods(["GET", "POST"])
def ha_configure(request: HttpRequest, name: str) -> HttpResponse:
    """Configure High Availability Parameters (a new pair) or update an existing one."""
    primary = get_object_or_404(Appliance, name=name)
    pair = selectors.pair_for(primary)
    existing = pair if pair is not None and pair.primary_id == primary.pk else None
    backs = pair if pair is not None and pair.secondary_id == primary.pk else None
    context = {
        "primary": primary,
        "pair": existing,
        "backs": backs,
        "can_operate": request.user.has_perm(roles.OPERATE),
    }
    if existing is not None:
        return _ha_update(request, existing, context)
    if backs is not None:
        return render_page(request, "hapairs/ha_configure.html", context)
    if request.method == "POST":
        check_role(request, roles.OPERATE, "configure high availability")

    stage = request.POST.get("stage", "")
    if stage == "confirm":
        return _ha_configure_confirm(request, primary, context)
    if request.method == "POST" and stage == "cancel":
        _pending_take(request, primary, None)
        return redirect("ha_configure", name=primary.name)
    form = ConfigureHAForm(*posted(request))
    facts: dict = {}
    checked = False
    if request.method == "POST":
        valid = form.is_valid()
        if stage == "validate":  # half-filled as the operator types: no "required" noise yet
            for field in [
                n for n in form.errors if n in form.fields and not request.POST.get(n) and n not in request.FILES
            ]:
                del form.errors[field]
        data = form.cleaned_data
        if "secondary_name" in data and "secondary_ip" in data:
            # the pairing rules too, even while another field is wrong, so every problem shows at once
            check = _pairing_check(primary, data, data.get("activation_license"))
            facts = check.facts
            _apply_errors(form, check.errors)
            if valid and not check.errors and stage == "save":
                return _ha_configure_ask(request, primary, form, check, context)
        checked = stage != "validate" or bool(form.errors) or "secondary_name" in data and "secondary_ip" in data
    context.update(form=form, facts=facts, checked=checked)
    if stage == "validate":  # HTMX, as the operator fills the form: the rule check only
        return render_page(request, "hapairs/ha_configure.html", context, partial="rule-check")
    return render_page(request, "hapairs/ha_configure.html", context, status=400 if form.errors else 200)


def _ha_configure_ask(request, primary, form, check: services.PairingCheck, context) -> HttpResponse:
    """Every check passed: keep the input server-side (the password encrypted, never put back
    into the page) and ask the operator to confirm."""
    data = form.cleaned_data
    upload = data.get("activation_license")
    token = secrets.token_urlsafe(16)
    _pending_put(request, primary, {
        "token": token,
        "primary": primary.pk,
        "secondary_name": data["secondary_name"],
        "secondary_ip": data["secondary_ip"],
        "password": crypto.encrypt(data.get("secondary_password") or ""),
        "failover_type": data["failover_type"],
        "failback_type": data["failback_type"],
        "failover_wait": data["failover_wait"],
        "witnesses": check.witnesses,
        "witness_password": crypto.encrypt(data.get("witness_password") or ""),
        "witness_mode": data["witness_mode"],
        "reason": data.get("reason", ""),
        "license_name": upload.name if upload else "",
        "license": crypto.encrypt(upload.read().decode("latin-1")) if upload else "",
    })  # fmt: skip
    context.update(
        stage="confirm",
        token=token,
        pending={**{k: v for k, v in data.items() if "password" not in k}, "witnesses": check.witnesses},
        witness_mode_label=WitnessMode(data["witness_mode"]).label,
        facts=check.facts,
        license_name=upload.name if upload else "",
    )
    return render_page(request, "hapairs/ha_configure.html", context)


def _ha_configure_confirm(request, primary, context) -> HttpResponse:
    pending = _pending_take(request, primary, request.POST.get("token") or "")
    if not pending or pending.get("primary") != primary.pk:
        messages.error(request, "That confirmation has expired or was already used; fill the form again.")
        return redirect("ha_configure", name=primary.name)
    license = None
    if pending["license"]:
        license = (pending["license_name"], crypto.decrypt(pending["license"]).encode("latin-1"))
    try:
        pair, job = services.ha_configure(
            primary=primary,
            secondary_name=pending["secondary_name"],
            secondary_ip=pending["secondary_ip"],
            secondary_password=crypto.decrypt(pending["password"]),
            failover_type=pending["failover_type"],
            failback_type=pending["failback_type"],
            failover_wait=pending["failover_wait"],
            activation_license=license,
            witnesses=pending.get("witnesses", []),  # .get: a confirmation pending since before witnesses
            witness_password=crypto.decrypt(pending["witness_password"]) if pending.get("witness_password") else "",
            witness_mode=pending.get("witness_mode", WitnessMode.SAFE),
            by=request.user,
            reason=pending["reason"],
        )
    except services.ServiceError as exc:
        # the form again as it was saved (never a password), with the reason on top
        fields = ("secondary_name", "secondary_ip", "failover_type", "failback_type", "failover_wait", "reason")
        form = ConfigureHAForm(
            {
                **{k: pending[k] for k in fields},
                "witnesses": " ".join(pending.get("witnesses", [])),
                "witness_mode": pending.get("witness_mode", WitnessMode.SAFE),
            }
        )
        form.is_valid()
        _apply_errors(form, exc.errors)
        context.update(form=form, facts={}, checked=True)
        return render_page(request, "hapairs/ha_configure.html", context, status=400)
    status_url = reverse("ha_status", kwargs={"name": primary.name})
    context.update(stage="wait", job=job, status_url=status_url)
    return render_page(request, "hapairs/ha_configure.html", context)


def _ha_update(request: HttpRequest, pair: HAPair, context: dict) -> HttpResponse:
    """The pair exists: change Failover Type, Failback Type, Long Failover Wait and the
    witnesses (a job pushes them to both agents: "Configuration updated")."""
    initial = {
        "failover_type": pair.failover_type,
        "failback_type": pair.failback_type,
        "failover_wait": pair.failover_wait,
        "witnesses": ", ".join(pair.witness_addresses),
        "witness_mode": pair.witness_mode,
    }
    form = UpdateHAForm(posted(request)[0], initial=initial, password_stored=pair.has_witness_password)
    if request.method == "POST":
        check_role(request, roles.OPERATE, "change high availability parameters")
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = services.ha_update(
                    pair=pair,
                    failover_type=data["failover_type"],
                    failback_type=data["failback_type"],
                    failover_wait=data["failover_wait"],
                    # a field the post does not carry keeps the pair's value
                    witnesses=data["witnesses"] if "witnesses" in request.POST else None,
                    witness_password=data["witness_password"],
                    witness_mode=data["witness_mode"] or None,
                    by=request.user,
                    reason=data["reason"],
                )
            except services.ServiceError as exc:
                _apply_errors(form, exc.errors)
            else:
                messages.success(request, f"Updating the parameters (job #{job.pk}).")
                return redirect("ha_status", name=pair.primary.name)
    context.update(
        form=form,
        secondary_activated=(selectors.appliance_is_activated(pair.secondary) if pair.secondary.is_virtual else None),
    )
    return render_page(request, "hapairs/ha_configure.html", context, status=400 if form.errors else 200)


# --- Current High Availability Status ---------------------------------------------------
EVENTS_PAGE_SIZE = 25


def _status_context(request: HttpRequest, pair: HAPair) -> dict:
    pager = SeekPager(
        request,
        scope=f"ha_status:{pair.pk}",
        model=HAEvent,
        ordering=selectors.EVENTS_ORDERING,
        total=pair.events_total if hasattr(pair, "events_total") else selectors.tally(Tally.PAIR_EVENTS, pair.pk),
        per_page=EVENTS_PAGE_SIZE,
    )
    events = pager.read(lambda where: selectors.pair_events_seek(pair, where))
    active_job = Job.objects.filter(pair=pair, status__in=ACTIVE_JOB_STATUSES).select_related("requested_by").first()
    return {
        "pair": pair,
        "primary": pair.primary,
        "status": selectors.pair_status_sentence(pair),
        "events": events,
        "pager": pager,
        "active_job": active_job,
        "in_progress": selectors.pair_in_progress(pair, job_active=active_job is not None),
        "chart": _sparkline(selectors.heartbeat_history(pair)),
        "network": selectors.pair_network(pair),
        "no_witness_risk": selectors.NO_WITNESS_RISK,
        "can_operate": request.user.has_perm(roles.OPERATE),
        "can_administer": request.user.has_perm(roles.ADMINISTER),
        "certificate_problems": [
            (node, problem)
            for node in (pair.primary, pair.secondary)
            if (problem := selectors.certificate_problem(node))
        ],
        "window_open": pair.switch_allowed_at is not None and pair.switch_allowed_at > timezone.now(),
        "maintenance_form": MaintenanceForm(),
        "drills": [(drill, drills.scorecard_rows(drill.scorecard)) for drill in services.drill_history(pair, limit=5)],
        "troubles": troubles(pair),
        "drill_schedule": getattr(pair, "drill_schedule", None),
    }


def _sparkline(history: list[tuple], width: int = 240, height: int = 40) -> dict | None:
    """Server-side chart of the mean heartbeat time: SVG polyline points, no JavaScript."""
    if len(history) < 2:
        return None
    values = [ms for _at, ms in history]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return {
        "points": points,
        "width": width,
        "height": height,
        "low": low,
        "high": high,
        "first": history[0][0],
        "last": history[-1][0],
    }


def _pair_or_404(name: str) -> HAPair:
    appliance = get_object_or_404(Appliance, name=name)
    pair = selectors.pair_for(appliance)
    if pair is None:
        raise Http404(f"{name} is not part of an HA pair.")
    return pair


@require_GET
def ha_status(request: HttpRequest, name: str) -> HttpResponse:
    """Current High Availability Status; HTMX polls the status block while something moves."""
    pair = selectors.pair_for_name(name)
    if pair is None:
        appliance = get_object_or_404(Appliance, name=name)
        return render_page(request, "hapairs/ha_status.html", {"appliance": appliance, "pair": None}, status=404)
    context = _status_context(request, pair)
    return render_polled(
        request,
        "hapairs/ha_status.html",
        context,
        target="ha-status",
        partial="status-block",
        live=context["in_progress"],
    )


@require_POST
def ha_refresh(request: HttpRequest, name: str) -> HttpResponse:
    """Refresh Status: ask both agents now (a worker does it; the page shows it when it lands)."""
    pair = _pair_or_404(name)
    dispatch.on_commit(dispatch.APPLIANCES_REFRESH, [pair.primary_id, pair.secondary_id])
    messages.info(request, "Asking both nodes for their status now.")
    return redirect("ha_status", name=name)


def _confirmed(
    request: HttpRequest, what: str, act: Callable[[str], HttpResponse]
) -> tuple[ActionReasonForm, HttpResponse | None, str]:
    """The pages that ask, then act (switchover, failback, reset, drill, recovery): on a POST
    the Operator role is checked and, given a reason, ``act(reason)`` calls the service and
    answers (its message and redirect). Returns the form, that answer (None: show the page
    again) and the service's refusal, shown on the page with a 409."""
    form = ActionReasonForm(posted(request)[0])
    if request.method != "POST":
        return form, None, ""
    check_role(request, roles.OPERATE, what)
    if not form.is_valid():
        return form, None, ""
    try:
        return form, act(form.cleaned_data["reason"]), ""
    except services.ServiceError as exc:
        return form, None, exc.message


def _confirm_page(
    request: HttpRequest, template: str, pair: HAPair, form: ActionReasonForm, refusal: str, **context
) -> HttpResponse:
    context.update(
        pair=pair, primary=pair.primary, form=form, refusal=refusal, can_operate=request.user.has_perm(roles.OPERATE)
    )
    return render_page(request, template, context, status=409 if refusal else 200)


SWITCH_ACTIONS = {"switchover": "run a switchover", "failback": "run a failback"}


@require_http_methods(["GET", "POST"])
def ha_switch(request: HttpRequest, name: str, action: str) -> HttpResponse:
    """Switchover / Failback: the pre-flight check, a confirmation, then the job."""
    pair = _pair_or_404(name)
    if action not in SWITCH_ACTIONS:
        return redirect("ha_status", name=name)

    def start(reason: str) -> HttpResponse:
        service = services.ha_switchover if action == "switchover" else services.ha_failback
        job = service(pair=pair, by=request.user, reason=reason)
        messages.success(request, f"{action.title()} started (job #{job.pk}).")
        return redirect("ha_status", name=pair.primary.name)

    form, done, refusal = _confirmed(request, SWITCH_ACTIONS[action], start)
    if done:
        return done
    check = selectors.preflight(pair, action)
    return _confirm_page(request, "hapairs/ha_switch.html", pair, form, refusal, action=action, check=check)


@require_http_methods(["GET", "POST"])
def ha_reset_sync(request: HttpRequest, name: str) -> HttpResponse:
    """Reset a stuck synchronisation: what is stuck and since when, the reset, and its
    escalation (emptying the secondary's copy), each confirmed."""
    pair = _pair_or_404(name)

    def reset(reason: str) -> HttpResponse:
        job = services.ha_reset_sync(
            pair=pair,
            by=request.user,
            reason=reason,
            empty_data=request.POST.get("empty_data") == "yes",
            confirm_empty=request.POST.get("confirm_empty") == "yes",
        )
        messages.success(request, f"Resetting the synchronisation (job #{job.pk}); its progress follows.")
        return redirect("job_detail", job_id=job.pk)

    form, done, refusal = _confirmed(request, "reset a synchronisation", reset)
    if done:
        return done
    return _confirm_page(request, "hapairs/ha_reset_sync.html", pair, form, refusal, stalled=sync_stalled(pair))


@require_http_methods(["GET", "POST"])
def ha_drill(request: HttpRequest, name: str) -> HttpResponse:
    """Failover drill: the pre-flight check, what the drill does, a confirmation, then its job."""
    pair = _pair_or_404(name)

    def start(reason: str) -> HttpResponse:
        drill = services.drill_start(pair=pair, by=request.user, reason=reason)
        messages.success(request, f"Failover drill started (job #{drill.job_id}); its scorecard follows below.")
        return redirect("ha_status", name=pair.primary.name)

    form, done, refusal = _confirmed(request, "run a failover drill", start)
    if done:
        return done
    return _confirm_page(
        request,
        "hapairs/ha_drill.html",
        pair,
        form,
        refusal,
        check=selectors.preflight(pair, "switchover"),
        drill_refusal=services.drill_refusal(pair),
        window_minutes=round(settings.HA_STABILISATION_SECONDS / 60, 1),
        history=[(d, drills.scorecard_rows(d.scorecard)) for d in services.drill_history(pair, limit=20)],
    )


@require_POST
@requires(roles.OPERATE, "change maintenance mode")
def ha_maintenance(request: HttpRequest, name: str) -> HttpResponse:
    pair = _pair_or_404(name)
    form = MaintenanceForm(request.POST)
    if form.is_valid():
        try:
            services.ha_maintenance_set(
                pair=pair, on=form.cleaned_data["on"], by=request.user, reason=form.cleaned_data["reason"]
            )
        except services.ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                "Maintenance mode on: automatic failover paused."
                if form.cleaned_data["on"]
                else "Maintenance mode off.",
            )
    return redirect("ha_status", name=pair.primary.name)


@require_http_methods(["GET", "POST"])
def ha_delete(request: HttpRequest, name: str) -> HttpResponse:
    """Delete the secondary: the only safe teardown (spec §5). Asks first."""
    pair = _pair_or_404(name)
    form = ReasonForm(posted(request)[0])
    side = request.POST.get("side", "") if request.method == "POST" else ""
    if side in ("primary", "secondary"):  # one node only: the other cannot be reached
        check_role(request, roles.OPERATE, "remove a pairing from one node")
        if form.is_valid():
            try:
                job = services.ha_remove_one_side(
                    pair=pair,
                    side=side,
                    confirmed=request.POST.get("down_confirmed") == "yes",
                    by=request.user,
                    reason=form.cleaned_data["reason"],
                )
            except services.ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Removing the pairing from {getattr(pair, side).name} only (job #{job.pk}).")
                return redirect("job_detail", job_id=job.pk)
    elif request.method == "POST":
        check_role(request, roles.OPERATE, "delete a secondary")
        if form.is_valid() and request.POST.get("confirm") == pair.secondary.name:
            try:
                job = services.ha_delete_secondary(pair=pair, by=request.user, reason=form.cleaned_data["reason"])
            except services.ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Deleting {pair.secondary.name} from the pair (job #{job.pk}).")
                return redirect("job_detail", job_id=job.pk)
        elif form.is_valid():
            form.add_error(None, f"Type the secondary's name ({pair.secondary.name}) to confirm.")
    return render_page(
        request,
        "hapairs/ha_delete.html",
        {
            "pair": pair,
            "primary": pair.primary,
            "form": form,
            "side": side,
            # one side only, when the other does not answer the portal (spec §8)
            "one_side": "primary"
            if not pair.secondary_reachable
            else "secondary"
            if not pair.primary_reachable
            else "",
            "last_delete": Job.objects.filter(pair=pair, kind="delete_secondary").order_by("-pk").first(),
        },
        status=400 if form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
def ha_recover(request: HttpRequest, name: str) -> HttpResponse:
    """Recover a primary that lost its configuration (HA recovery mode). Asks first."""
    pair = _pair_or_404(name)

    def recover(reason: str) -> HttpResponse:
        job = services.ha_recover_primary(pair=pair, by=request.user, reason=reason)
        messages.success(request, f"Recovering {pair.primary.name} (job #{job.pk}).")
        return redirect("ha_status", name=pair.primary.name)

    form, done, refusal = _confirmed(request, "recover a primary", recover)
    if done:
        return done
    lost = pair.primary_reachable and pair.primary_state == "UNKNOWN"
    return _confirm_page(request, "hapairs/ha_recover.html", pair, form, refusal, lost=lost)


# --- High Availability overview (N:1) -------------------------------------------------------
@require_GET
def ha_overview(request: HttpRequest) -> HttpResponse:
    secondaries = selectors.ha_overview_secondaries()
    total = selectors.tally(Tally.SECONDARIES)
    pager = SeekPager(
        request, scope="ha_overview", model=SecondaryListing, ordering=selectors.HA_OVERVIEW_ORDERING, total=total
    )
    rows = pager.read(lambda where: selectors.ha_overview_seek(secondaries, where), key_of=lambda row: row[0])
    return render_page(
        request, "hapairs/ha_overview.html", {"rows": _overview_rows(rows), "pager": pager, "total": total}
    )


@dataclass(frozen=True)
class OverviewPair:
    primary: str
    status_url: str
    device_type: str
    heartbeat: str
    heartbeat_label: str
    maintenance: bool
    status_text: str


@dataclass(frozen=True)
class OverviewRow:
    """One secondary of the overview with the primaries it backs, as the page shows them."""

    name: str
    url: str
    hm_ip: str
    device_type: str
    version: str
    pairs: list[OverviewPair]


def _overview_rows(rows: list[tuple[dict, list[dict]]]) -> list[OverviewRow]:
    detail, status = url_of_name("mse_detail"), url_of_name("ha_status")
    return [
        OverviewRow(
            name=secondary["name"],
            url=detail(secondary["name"]),
            hm_ip=secondary["hm_ip"],
            device_type=DEVICE_TYPES.get(secondary["device_type"], secondary["device_type"]),
            version=secondary["version"],
            pairs=[
                OverviewPair(
                    primary=pair["primary_name"],
                    status_url=status(pair["primary_name"]),
                    device_type=DEVICE_TYPES.get(pair["primary_type"], pair["primary_type"]),
                    heartbeat=pair["heartbeat"],
                    heartbeat_label=HEARTBEATS.get(pair["heartbeat"], pair["heartbeat"]),
                    maintenance=pair["maintenance"],
                    status_text=pair["status_text"],
                )
                for pair in pairs
            ],
        )
        for secondary, pairs in rows
    ]
