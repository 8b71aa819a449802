"""Django admin for every model.

Every write here goes through a service, so the rules are checked and an event recorded;
what no service may change from here is read-only. Status fields belong to the agents and
jobs. A recorded appliance's identity and addresses are what its agent, and any pair it
is in, were configured with: read-only (remove it and add it again to change them); its
contact and its password change through the services. The password is write-only: the
form never renders it back, and saving with it blank keeps the old one. Pairs are changed
on the High Availability screens (which run jobs on both agents), so here they are read-only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from hapairs import services
from hapairs.models import Alert, Appliance, Delivery, HAEvent, HAPair, Job, License, LicenseFile, ReportSchedule
from hapairs.roles import REPORTS
from hapairs.services.reports import report_schedule_clean

STATUS_FIELDS_APPLIANCE = (
    "reachability",
    "ha_state",
    "generation",
    "services",
    "last_event_seq",
    "last_seen_at",
    "last_polled_at",
    "created_at",
    "updated_at",
)


class ApplianceAdminForm(forms.ModelForm):
    password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: stored encrypted, never shown. Leave blank to keep the current password.",
    )

    class Meta:
        model = Appliance
        exclude = ("password_ciphertext",)  # noqa: DJ006  (every field but the secret; readonly_fields decide)

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("password"):
            raise ValidationError({"password": "Enter the appliance's password."})
        return cleaned

    def save(self, commit=True):
        appliance = super().save(commit=False)
        if self.cleaned_data.get("password"):
            appliance.set_password(self.cleaned_data["password"])
        if commit:
            appliance.save()
        return appliance


@admin.register(Appliance)
class ApplianceAdmin(admin.ModelAdmin):
    form = ApplianceAdminForm
    list_display = (
        "name",
        "device_type",
        "hm_ip",
        "vip",
        "version",
        "role",
        "reachability",
        "ha_state",
        "last_seen_at",
    )
    list_filter = ("device_type", "role", "reachability", "ha_state", "version")
    search_fields = ("name", "hm_ip", "vip", "udi", "contact_name")
    readonly_fields = STATUS_FIELDS_APPLIANCE
    fieldsets = (
        (None, {"fields": ("name", "device_type", "version", "udi", "role", "contact_name")}),
        ("Addresses", {"fields": ("hm_ip", "vip", "vip_prefixlen", "direct_connect", "http_enabled")}),
        ("Credentials", {"fields": ("username", "password")}),
        ("Status (reported by the agent)", {"fields": STATUS_FIELDS_APPLIANCE}),
    )

    EDITABLE_ONCE_RECORDED = ("contact_name",)  # and the write-only password

    def has_delete_permission(self, request, obj=None):
        # Deleted on the MSE screens or through the API (services.appliance_delete): refused
        # while it is in a pair, a job runs on it or license files are on record, with a
        # reason and an event. The admin's own delete would do none of that.
        return False

    def get_readonly_fields(self, request, obj=None):
        if obj is None:  # adding: everything but the status
            return STATUS_FIELDS_APPLIANCE
        not_shown_read_only = (*self.EDITABLE_ONCE_RECORDED, "password_ciphertext")  # the ciphertext: never shown
        return [f.name for f in Appliance._meta.fields if f.name not in not_shown_read_only]

    def save_model(self, request, obj, form, change):
        if change:
            services.appliance_update(appliance=obj, contact_name=form.cleaned_data["contact_name"], by=request.user)
            if form.cleaned_data.get("password"):
                services.appliance_set_password(appliance=obj, password=form.cleaned_data["password"], by=request.user)
            return
        data = {
            name: form.cleaned_data.get(name)
            for name in (
                "name",
                "device_type",
                "hm_ip",
                "version",
                "username",
                "role",
                "vip",
                "vip_prefixlen",
                "udi",
                "contact_name",
                "http_enabled",
                "direct_connect",
            )
        }
        # The form has already run the model's validation, so the service accepts it.
        created = services.appliance_create(password=form.cleaned_data["password"], by=request.user, **data)
        obj.pk = created.pk
        obj.password_ciphertext = created.password_ciphertext


class LicenseInline(admin.TabularInline):
    model = License
    extra = 0
    can_delete = False
    readonly_fields = (
        "feature",
        "sku",
        "version",
        "count",
        "host_udi",
        "expires_on",
        "is_evaluation",
        "installed_on",
        "status",
    )

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(LicenseFile)
class LicenseFileAdmin(admin.ModelAdmin):
    """License files are verified on upload; nothing here may alter a signed file."""

    list_display = ("filename", "appliance", "uploaded_by", "uploaded_at")
    list_filter = ("uploaded_at",)
    search_fields = ("filename", "appliance__name", "sha256")
    readonly_fields = ("filename", "sha256", "content", "appliance", "uploaded_by", "uploaded_at")
    inlines = [LicenseInline]

    def has_add_permission(self, request):
        return False


@admin.register(License)
class LicenseAdmin(admin.ModelAdmin):
    list_display = ("feature", "sku", "count", "host_udi", "expires_on", "is_evaluation", "installed_on", "status")
    list_filter = ("feature", "status", "is_evaluation")
    search_fields = ("feature", "sku", "host_udi", "installed_on__name")
    readonly_fields = [f.name for f in License._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(HAPair)
class HAPairAdmin(admin.ModelAdmin):
    list_display = (
        "primary",
        "secondary",
        "instance_db_name",
        "failover_type",
        "failback_type",
        "failover_wait",
        "heartbeat",
        "replication",
        "sync_percent",
        "generation",
        "maintenance",
    )
    list_filter = ("failover_type", "failback_type", "heartbeat", "replication", "maintenance")
    search_fields = ("primary__name", "secondary__name", "primary__hm_ip", "secondary__hm_ip")
    list_select_related = ("primary", "secondary")

    def has_add_permission(self, request):
        # A pair is made on the Configure High Availability Parameters screen, which
        # checks the rules and configures both agents; a bare row here would do neither.
        return False

    def has_change_permission(self, request, obj=None):
        # Failover/failback types, the wait and maintenance are pushed to both agents by a job
        # (High Availability screens, services.ha_update / ha_maintenance_set): a row edited
        # here would be neither checked nor sent. The change form shows the pair read-only.
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the only safe teardown is "delete the secondary" (spec §5), a job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "kind",
        "status",
        "pair",
        "appliance",
        "requested_by",
        "progress",
        "created_at",
        "finished_at",
    )
    list_filter = ("kind", "status")
    search_fields = ("reason", "error", "pair__primary__name", "appliance__name")
    list_select_related = ("pair__primary", "pair__secondary", "appliance", "requested_by")
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(HAEvent)
class HAEventAdmin(admin.ModelAdmin):
    list_display = ("timestamp", "description", "generated_by", "pair", "appliance", "severity", "remarks")
    list_filter = ("severity", "generated_by")
    search_fields = ("description", "remarks", "generated_by")
    date_hierarchy = "timestamp"
    list_select_related = ("pair__primary", "pair__secondary", "appliance")
    readonly_fields = [f.name for f in HAEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the Events Log is a record; it is never edited by hand


# --- health reports, alerts and their deliveries ----------------------------------------
SCHEDULE_FIELDS = (
    "name",
    "recipients",
    "cadence",
    "send_at",
    "weekday",
    "crontab",
    "period_days",
    "enabled",
    "also_alerts",
)


class ReportScheduleAdminForm(forms.ModelForm):
    class Meta:
        model = ReportSchedule
        fields = SCHEDULE_FIELDS

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        values = {name: cleaned.get(name) for name in SCHEDULE_FIELDS if name not in ("enabled", "also_alerts")}
        try:
            report_schedule_clean(schedule=self.instance if self.instance.pk else None, **values)
        except services.ServiceError as exc:
            raise ValidationError(
                {name if name in self.fields else None: messages for name, messages in exc.errors.items()}
            ) from None
        return cleaned


@admin.register(ReportSchedule)
class ReportScheduleAdmin(admin.ModelAdmin):
    """Saved through the services, which keep the beat PeriodicTask in step."""

    form = ReportScheduleAdminForm
    list_display = ("name", "schedule_text", "recipients", "period_days", "enabled", "also_alerts", "last_sent_at")
    list_filter = ("enabled", "cadence", "also_alerts")
    search_fields = ("name", "recipients")
    readonly_fields = ("periodic_task", "last_sent_at", "created_by", "created_at", "updated_at")
    actions = ["send_now"]

    def save_model(self, request, obj, form, change):
        values = {name: form.cleaned_data[name] for name in SCHEDULE_FIELDS}
        if change:
            saved = services.report_schedule_update(schedule=obj, **values, by=request.user)
        else:
            saved = services.report_schedule_create(**values, by=request.user)
        obj.pk = saved.pk
        obj.periodic_task_id = saved.periodic_task_id

    def delete_model(self, request, obj):
        services.report_schedule_delete(schedule=obj, by=request.user)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            services.report_schedule_delete(schedule=schedule, by=request.user)

    @admin.action(description="Send the selected reports now")
    def send_now(self, request, queryset):
        for schedule in queryset:
            delivery = services.report_send_now(schedule=schedule, by=request.user)
            self.message_user(request, f"“{schedule.name}” queued (delivery #{delivery.pk}).")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("pk", "created_at", "kind", "channel", "subject", "status", "attempts", "sent_at")
    list_filter = ("kind", "channel", "status")
    search_fields = ("subject", "key", "last_error")
    list_select_related = ("schedule", "alert")
    readonly_fields = [f.name for f in Delivery._meta.fields]
    actions = ["retry"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_retry_permission(self, request):
        return request.user.has_perm(REPORTS)

    @admin.action(description="Retry the selected failed deliveries", permissions=["retry"])
    def retry(self, request, queryset):
        for delivery in queryset:
            try:
                services.delivery_retry(delivery=delivery, by=request.user)
            except services.ServiceError as exc:
                self.message_user(request, exc.message, level="warning")


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "title", "actor", "reason", "status", "suppressed_before")
    list_filter = ("kind", "status")
    search_fields = ("title", "actor", "reason", "key")
    readonly_fields = [f.name for f in Alert._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
