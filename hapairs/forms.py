"""Forms of the operator's screens. They check shapes only; the services decide.

Labels are the seed's words (MSE-HA-SPEC §4), so the screens read like the manager's.
Passwords are ``PasswordInput(render_value=False)``: never shown back.
"""

from __future__ import annotations

from django import forms

from hapairs import rules
from hapairs.choices import DeviceType, Reachability, ReportCadence, SwitchType, Weekday, WitnessMode
from hapairs.models import (
    FAILOVER_WAIT_DEFAULT,
    FAILOVER_WAIT_MAX,
    FAILOVER_WAIT_MIN,
    REPORT_PERIOD_MAX_DAYS,
    Appliance,
    device_name_validator,
)

SWITCH_CHOICES = SwitchType.choices
WITNESS_MODE_LABEL = "When the witnesses cannot be reached and the primary is gone"
WITNESS_MODE_HELP = (
    "Safe (the default): the secondary never takes over then, so no write the primary acknowledged "
    "is lost; you can still switch over by hand. Availability: it takes over once the Long Failover "
    "Wait has passed, and may lose the writes the primary acknowledged while it was alone."
)


class PortalForm(forms.Form):
    """The seed's labels carry no colon."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class ApplianceAddForm(PortalForm):
    """Add Mobility Services Engine, first page."""

    name = forms.CharField(label="Device Name", max_length=63, validators=[device_name_validator])
    ip = forms.GenericIPAddressField(label="IP Address", protocol="IPv4", help_text="The Health Monitor IP address.")
    contact_name = forms.CharField(label="Contact Name", max_length=128, required=False)
    username = forms.CharField(label="Username", max_length=64, initial="admin")
    password = forms.CharField(label="Password", max_length=256, widget=forms.PasswordInput(render_value=False))
    http_enabled = forms.BooleanField(label="HTTP", required=False, help_text="Enable HTTP access.")
    delete_assignments = forms.BooleanField(
        label="Delete synchronized service assignments",
        required=False,
        initial=True,
        help_text="Selecting Delete synchronized service assignments permanently removes all service "
        "assignments. Existing location history data is retained, however you must use manual service "
        "assignments to reassign services.",
    )


def witnesses_field() -> forms.CharField:
    return forms.CharField(
        label="Witnesses",
        max_length=1000,
        required=False,
        help_text=f"Optional: each witness as IP:PORT (port {rules.DEFAULT_WITNESS_PORT} if left out), "
        f"separated by commas or spaces; at most {rules.MAX_WITNESSES}, on hosts other than the two nodes "
        "(python -m nodeagent witness --listen IP:PORT --password …). Without witnesses a cut network can "
        "leave both nodes serving the VIP.",
    )


def witness_password_field(help_text: str) -> forms.CharField:
    return forms.CharField(
        label="Witness password",
        max_length=256,
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=help_text,
    )


def witness_mode_field() -> forms.ChoiceField:
    return forms.ChoiceField(
        label=WITNESS_MODE_LABEL,
        choices=WitnessMode.choices,
        initial=WitnessMode.SAFE,
        required=False,  # not posted: safe for a new pair, the pair's own on an update
        help_text=WITNESS_MODE_HELP,
    )


class WitnessesCleaned:
    """The witnesses field's text as the list the services check (shape only)."""

    cleaned_data: dict

    def clean_witnesses(self) -> list[str]:
        return rules.split_witnesses(self.cleaned_data.get("witnesses") or "")


class ConfigureHAForm(WitnessesCleaned, PortalForm):
    """Configure High Availability Parameters (the labels are the seed's, exactly)."""

    secondary_name = forms.CharField(label="Secondary Device Name", max_length=63, validators=[device_name_validator])
    secondary_ip = forms.GenericIPAddressField(label="Secondary IP Address", protocol="IPv4")
    secondary_password = forms.CharField(
        label="Secondary Password",
        max_length=256,
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="The secondary's admin password. Leave empty for a secondary the portal already knows.",
    )
    activation_license = forms.FileField(label="Activate Secondary with License", required=False)
    delete_activation_license = forms.BooleanField(label="Delete Secondary Activation license", required=False)
    failover_type = forms.ChoiceField(label="Failover Type", choices=SWITCH_CHOICES, initial=SwitchType.MANUAL)
    failback_type = forms.ChoiceField(label="Failback Type", choices=SWITCH_CHOICES, initial=SwitchType.MANUAL)
    failover_wait = forms.IntegerField(
        label="Long Failover Wait",
        min_value=FAILOVER_WAIT_MIN,
        max_value=FAILOVER_WAIT_MAX,
        initial=FAILOVER_WAIT_DEFAULT,
        help_text=f"Seconds of missed heartbeats before an automatic failover ({FAILOVER_WAIT_MIN}–{FAILOVER_WAIT_MAX}).",
    )
    witnesses = witnesses_field()
    witness_password = witness_password_field(
        f"The --password the witnesses run with (at least {rules.MIN_WITNESS_PASSWORD} characters); "
        "needed with witnesses, never shown again."
    )
    witness_mode = witness_mode_field()
    reason = forms.CharField(label="Reason", max_length=500, required=False, help_text="Recorded with the job.")

    def clean_witness_mode(self) -> str:
        return self.cleaned_data.get("witness_mode") or WitnessMode.SAFE


class UpdateHAForm(WitnessesCleaned, PortalForm):
    failover_type = forms.ChoiceField(label="Failover Type", choices=SWITCH_CHOICES)
    failback_type = forms.ChoiceField(label="Failback Type", choices=SWITCH_CHOICES)
    failover_wait = forms.IntegerField(
        label="Long Failover Wait", min_value=FAILOVER_WAIT_MIN, max_value=FAILOVER_WAIT_MAX
    )
    witnesses = witnesses_field()
    witness_password = witness_password_field("")
    witness_mode = witness_mode_field()
    reason = forms.CharField(label="Reason", max_length=500, required=False)

    def __init__(self, *args, password_stored: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["witness_password"].help_text = (
            "A witness password is stored (never shown): leave this empty to keep it."
            if password_stored
            else f"No witness password is stored: needed with witnesses (at least {rules.MIN_WITNESS_PASSWORD} "
            "characters), never shown again."
        )


class ReasonForm(PortalForm):
    reason = forms.CharField(
        label="Reason", max_length=500, required=False, help_text="Recorded with the job and in the events log."
    )


class ActionReasonForm(PortalForm):
    """Switchover, failback, recovery: why, always (the API asks the same)."""

    reason = forms.CharField(
        label="Reason",
        max_length=500,
        help_text="Recorded with the job and in the events log.",
        error_messages={"required": "Say why: it is recorded with the job and in the events log."},
    )


class MaintenanceForm(PortalForm):
    on = forms.BooleanField(required=False)
    reason = forms.CharField(label="Reason", max_length=500, required=False)


class ApplianceFilterForm(PortalForm):
    """The list's filter bar: every field optional, bad values simply ignored."""

    q = forms.CharField(label="Search", required=False, max_length=100)
    device_type = forms.ChoiceField(
        label="Device Type", required=False, choices=[("", "Any type"), *DeviceType.choices]
    )
    reachability = forms.ChoiceField(
        label="Reachability", required=False, choices=[("", "Any reachability"), *Reachability.choices]
    )
    paired = forms.ChoiceField(
        label="High Availability",
        required=False,
        choices=[("", "Paired or not"), ("yes", "Primary of a pair"), ("secondary", "Secondary"), ("no", "Not paired")],
    )


class LicenseUploadForm(PortalForm):
    appliance = forms.ModelChoiceField(
        label="Appliance", queryset=None, to_field_name="name", empty_label="Choose the appliance…"
    )
    file = forms.FileField(label="License file", help_text="A .lic file; it is verified before anything is stored.")
    reason = forms.CharField(label="Reason", max_length=500, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["appliance"].queryset = Appliance.objects.defer("password_ciphertext").order_by("name")


class ReportScheduleForm(PortalForm):
    """A health report schedule. Shapes only: the recipients and the crontab are checked
    by ``services.report_schedule_create/update``, whose errors land on these fields."""

    name = forms.CharField(label="Name", max_length=100)
    recipients = forms.CharField(
        label="Recipients",
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 40}),
        help_text="E-mail addresses, separated by commas or new lines.",
    )
    cadence = forms.ChoiceField(label="Period", choices=ReportCadence.choices, initial=ReportCadence.DAILY)
    send_at = forms.TimeField(
        label="Send at",
        initial="07:00",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        help_text="Daily and weekly: the time of day.",
    )
    weekday = forms.TypedChoiceField(
        label="Day", choices=Weekday.choices, coerce=int, initial=Weekday.MONDAY, help_text="Weekly: the day."
    )
    crontab = forms.CharField(
        label="Crontab",
        max_length=100,
        required=False,
        help_text="Custom: minute hour day-of-month month day-of-week, e.g. 0 7 * * 1-5.",
    )
    period_days = forms.IntegerField(
        label="Report covers (days)",
        min_value=1,
        max_value=REPORT_PERIOD_MAX_DAYS,
        required=False,
        help_text="Empty: 1 for daily, 7 for weekly.",
    )
    enabled = forms.BooleanField(label="Enabled", required=False, initial=True)
    also_alerts = forms.BooleanField(
        label="Also send alerts", required=False, help_text="These recipients also get every alert as it happens."
    )
