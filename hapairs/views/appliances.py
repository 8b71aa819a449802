"""Mobility Services Engines: the list, the Add wizard, an appliance's detail."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hapairs import licenses, roles, selectors, services
from hapairs.choices import LicenseStatus
from hapairs.forms import ApplianceAddForm, ApplianceFilterForm
from hapairs.models import Appliance, License
from hapairs.views._common import (
    CURSOR,
    DEVICE_TYPES,
    REACHABILITY,
    SeekPager,
    posted,
    render_page,
    requires,
    url_of_name,
)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("mse_list")


@require_GET
def mse_list(request: HttpRequest) -> HttpResponse:
    """Mobility Services Engines: filter, sort and page (seek pages, see ``SeekPager``); the
    table alone for HTMX."""
    filters = ApplianceFilterForm(request.GET)
    wanted = filters.cleaned_data if filters.is_valid() else {}
    sort = request.GET.get("sort", "name")
    descending = sort.startswith("-")
    sort = sort.lstrip("-")
    if sort not in selectors.APPLIANCE_SORTS:
        sort, descending = "name", False
    chosen = {key: wanted.get(key, "") for key in ("q", "device_type", "reachability", "paired")}
    queryset = selectors.appliance_filtered(**chosen)
    total = selectors.appliance_total(queryset, filtered=any(chosen.values()))
    pager = SeekPager(
        request,
        scope=f"mse_list:{'-' if descending else ''}{sort}:{urlencode(sorted(chosen.items()))}",
        model=Appliance,
        ordering=selectors.appliance_ordering(sort, descending),
        total=total,
    )
    rows = pager.read(lambda where: selectors.appliance_seek(queryset, sort=sort, descending=descending, where=where))
    base = {k: v for k, v in request.GET.items() if k not in ("sort", "page", CURSOR) and v}
    columns = [
        {
            "key": key,
            "label": label,
            "active": key == sort,
            "descending": descending,
            "url": "?" + urlencode({**base, "sort": f"-{key}" if key == sort and not descending else key}),
        }
        for key, (label, _order) in selectors.APPLIANCE_SORTS.items()
    ]
    context = {
        "rows": _list_rows(rows),
        "total": total,
        "pager": pager,
        "filters": filters,
        "columns": columns,
        "can_add": request.user.has_perm(roles.ADMINISTER),
        "can_operate": request.user.has_perm(roles.OPERATE),
    }
    return render_page(request, "hapairs/mse_list.html", context, partial="table")


@dataclass(frozen=True)
class ListRow:
    """One line of the Mobility Services Engines list, every cell worked out here, so the
    template only prints (a page is 50 of them)."""

    name: str
    url: str
    device_type: str
    ip: str  # the VIP once this primary is paired (Appliance.display_ip)
    version: str
    reachability: str
    reachability_label: str
    secondary: str  # its secondary's name, when it is a primary
    status_url: str
    maintenance: bool
    maintenance_reason: str
    backs: list[tuple[str, str]]  # the primaries it backs, when a secondary: (name, status URL)
    configure_url: str
    services: list[str]


def _list_rows(appliances: list[dict]) -> list[ListRow]:
    """The rows of ``selectors.appliance_seek``, as the list shows them."""
    detail, status, configure = url_of_name("mse_detail"), url_of_name("ha_status"), url_of_name("ha_configure")
    rows = []
    for appliance in appliances:
        name, primary = appliance["name"], appliance["secondary"] is not None
        rows.append(
            ListRow(
                name=name,
                url=detail(name),
                device_type=DEVICE_TYPES.get(appliance["device_type"], appliance["device_type"]),
                ip=appliance["vip"] if primary and appliance["vip"] else appliance["hm_ip"],
                version=appliance["version"],
                reachability=appliance["reachability"],
                reachability_label=REACHABILITY.get(appliance["reachability"], appliance["reachability"]),
                secondary=appliance["secondary"] or "",
                status_url=status(name),
                maintenance=bool(appliance["maintenance"]),
                maintenance_reason=appliance["maintenance_reason"] or "",
                backs=[(backed, status(backed)) for backed in appliance["backs"]],
                configure_url=configure(name),
                services=[
                    f"{service.get('name', '')}: {service.get('admin_status') or '—'} / {service.get('service_status') or '—'}"
                    for service in appliance["services"] or []
                    if isinstance(service, dict)
                ],
            )
        )
    return rows


WIZARD_STEPS = [
    ("details", "Device details"),
    ("licenses", "License summary"),
    ("services", "Services"),
    ("done", "Done"),
]


@require_http_methods(["GET", "POST"])
@requires(roles.ADMINISTER, "add appliances")
def mse_add(request: HttpRequest) -> HttpResponse:
    """Add Mobility Services Engine, page 1: the portal contacts the agent; nothing is saved
    unless it answers with the right password."""
    form = ApplianceAddForm(posted(request)[0])
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            appliance = services.appliance_add(
                name=data["name"],
                ip=data["ip"],
                password=data["password"],
                username=data["username"],
                contact_name=data["contact_name"],
                http_enabled=data["http_enabled"],
                delete_assignments=data["delete_assignments"],
                by=request.user,
            )
        except services.ServiceError as exc:
            for field, problems in exc.errors.items():
                for problem in problems:
                    form.add_error(field if field in form.fields else None, problem)
        else:
            messages.success(
                request, f"{appliance.name} added: {appliance.get_device_type_display()} {appliance.version}."
            )
            return redirect("mse_add_step", name=appliance.name, step="licenses")
    return render_page(request, "hapairs/mse_add.html", {"form": form, "steps": WIZARD_STEPS, "step": "details"})


@require_GET
def mse_add_step(request: HttpRequest, name: str, step: str) -> HttpResponse:
    """The wizard's later pages: license summary, services, done (reading what was discovered)."""
    appliance = get_object_or_404(Appliance, name=name)
    if step not in dict(WIZARD_STEPS) or step == "details":
        return redirect("mse_add_step", name=name, step="licenses")
    context = {"appliance": appliance, "steps": WIZARD_STEPS, "step": step, **_license_context(appliance)}
    return render_page(request, "hapairs/mse_add.html", context)


def _license_context(appliance: Appliance) -> dict:
    today = timezone.localdate()
    # what counts: installed, or verified with the install job pending; never removed ones
    held = list(License.objects.filter(source_file__appliance=appliance).exclude(status=LicenseStatus.REMOVED))
    try:
        summary = licenses.license_summary(appliance.device_type, held, today)
    except ValueError:  # a device type without platform limits (none today): show nothing rather than fail
        summary = []
    return {
        "license_summary": summary,
        "activated": selectors.appliance_is_activated(appliance) if appliance.is_virtual else None,
    }


@require_GET
def mse_detail(request: HttpRequest, name: str) -> HttpResponse:
    appliance = get_object_or_404(Appliance.objects.defer("password_ciphertext"), name=name)
    pairs = list(selectors.pairs_of(appliance))
    pair = pairs[0] if pairs else None
    backed = [each for each in pairs if each.secondary_id == appliance.pk]  # the primaries it backs
    context = {
        "appliance": appliance,
        "pair": pair,
        "backed": backed,
        **_license_context(appliance),
        "can_operate": request.user.has_perm(roles.OPERATE),
        "can_administer": request.user.has_perm(roles.ADMINISTER),
        "certificate_problem": selectors.certificate_problem(appliance),
    }
    return render_page(request, "hapairs/mse_detail.html", context)


TRUST_WHAT = "trust an appliance's new TLS certificate"


@require_GET
@requires(roles.ADMINISTER, TRUST_WHAT)
def mse_certificate(request: HttpRequest, name: str) -> HttpResponse:
    """Trust the new certificate, asked first: the pinned and the presented fingerprints."""
    appliance = get_object_or_404(Appliance.objects.defer("password_ciphertext"), name=name)
    return render_page(request, "hapairs/mse_certificate.html", {"appliance": appliance})


@require_POST
@requires(roles.ADMINISTER, TRUST_WHAT)
def mse_certificate_trust(request: HttpRequest, name: str) -> HttpResponse:
    """Confirmed: the agent must present exactly the fingerprint the Admin saw (the form's)."""
    appliance = get_object_or_404(Appliance, name=name)
    try:
        services.appliance_certificate_trust(
            appliance=appliance, fingerprint=request.POST.get("fingerprint", ""), by=request.user
        )
    except services.ServiceError as exc:
        context = {"appliance": appliance, "refusal": exc.message}
        return render_page(request, "hapairs/mse_certificate.html", context, status=409)
    messages.success(request, f"{appliance.name}'s new TLS certificate is trusted: the portal talks to it again.")
    return redirect("mse_detail", name=appliance.name)


@require_GET
def mse_agent_text(request: HttpRequest, name: str, what: str) -> HttpResponse:
    """The appliance's own `gethainfo` / `getserverinfo` output, read from its agent now."""
    appliance = get_object_or_404(Appliance, name=name)
    text, status = selectors.appliance_output(appliance, what)
    if request.htmx:
        return render_page(
            request, "hapairs/mse_detail.html", {"agent_text": text, "agent_ok": status == 200}, partial="agent-text"
        )
    return HttpResponse(text, content_type="text/plain; charset=utf-8", status=status)
