"""Licenses: what every appliance holds, and the upload (verified before anything is kept)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hapairs import licenses, services
from hapairs.forms import LicenseUploadForm
from hapairs.models import License, LicenseFile
from hapairs.views._common import Pager, posted, render_page, requires

UPLOAD = "hapairs.add_licensefile"


@require_GET
def license_list(request: HttpRequest) -> HttpResponse:
    rows = License.objects.select_related("source_file__appliance", "installed_on").order_by(
        "source_file__appliance__name", "feature", "pk"
    )
    pager = Pager(request, rows.count())
    context = {
        "licenses": rows[pager.offset : pager.offset + pager.per_page],
        "pager": pager,
        "today": timezone.localdate(),
        "can_upload": request.user.has_perm(UPLOAD),
    }
    return render_page(request, "hapairs/license_list.html", context)


@require_http_methods(["GET", "POST"])
@requires(UPLOAD, "upload licenses")
def license_upload(request: HttpRequest) -> HttpResponse:
    """Upload a license file for one appliance: every line verified (signature, host binding,
    expiry, duplicates) before it is stored; a job installs it on the appliance."""
    form = LicenseUploadForm(*posted(request), initial={"appliance": request.GET.get("appliance")})
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            if upload.size > licenses.MAX_BYTES:
                raise services.ServiceError(
                    f"The file is {upload.size:,} bytes; a license file is at most {licenses.MAX_BYTES:,} bytes.",
                    field="file",
                )
            license_file, job = services.license_upload(
                appliance=form.cleaned_data["appliance"],
                filename=upload.name,
                data=upload.read(),
                by=request.user,
                reason=form.cleaned_data["reason"],
            )
        except services.ServiceError as exc:
            form.add_error("file" if exc.field in ("file", "__all__") else None, exc.message)
        else:
            features = ", ".join(f"{lic.feature} × {lic.count}" for lic in license_file.licenses.all())
            messages.success(
                request,
                f"{license_file.filename} verified for {license_file.appliance.name} ({features}); "
                f"installing it (job #{job.pk}).",
            )
            return redirect("license_list")
    return render_page(request, "hapairs/license_upload.html", {"form": form}, status=400 if form.errors else 200)


@require_POST
@requires(UPLOAD, "remove licenses")
def license_remove(request: HttpRequest, file_id: int) -> HttpResponse:
    """Remove a license file from its appliance (for a VA's activation license: the seed's
    "Delete Secondary Activation license"); refused while the VA is in a pair."""
    license_file = get_object_or_404(LicenseFile.objects.select_related("appliance"), pk=file_id)
    try:
        job = services.license_remove(
            license_file=license_file, by=request.user, reason=request.POST.get("reason", "")[:500]
        )
    except services.ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, f"Removing {license_file.filename} from {license_file.appliance.name} (job #{job.pk})."
        )
    return redirect("license_list")
