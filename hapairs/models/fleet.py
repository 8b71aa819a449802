"""Appliances, their licenses, HA pairs and their heartbeat history."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

from hapairs import crypto
from hapairs.choices import (
    MAX_PRIMARIES_PER_SECONDARY,
    VIRTUAL_TYPES,
    DeviceType,
    HAState,
    LicenseStatus,
    LinkStatus,
    Reachability,
    ReplicationStatus,
    Role,
    SwitchType,
    WitnessMode,
    instance_identity,
)
from hapairs.licenses import canonical_form
from nodeagent import protocol

device_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
    "A device name is 1–63 letters, digits, dots, hyphens or underscores, starting with a letter or digit.",
)
version_validator = RegexValidator(r"^\d+(\.\d+){1,3}$", "A software version is dotted numbers, such as 8.0.110.0.")

# The one range, from the wire's contract (the agents refuse anything outside it).
FAILOVER_WAIT_MIN = protocol.MIN_FAILOVER_WAIT
FAILOVER_WAIT_MAX = protocol.MAX_FAILOVER_WAIT
FAILOVER_WAIT_DEFAULT = protocol.DEFAULT_FAILOVER_WAIT


class Appliance(models.Model):
    """One Mobility Services Engine, as the manager knows it."""

    name = models.CharField("Device Name", max_length=63, unique=True, validators=[device_name_validator])
    device_type = models.CharField("Device Type", max_length=16, choices=DeviceType.choices)
    hm_ip = models.GenericIPAddressField("Health Monitor IP", protocol="IPv4", unique=True)
    vip = models.GenericIPAddressField("Virtual IP", protocol="IPv4", null=True, blank=True)
    vip_prefixlen = models.PositiveSmallIntegerField(
        "VIP netmask (prefix length)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(32)],
    )
    version = models.CharField("Version", max_length=32, validators=[version_validator])
    udi = models.CharField("UDI", max_length=128, blank=True)
    role = models.CharField(max_length=12, choices=Role.choices, default=Role.UNCONFIGURED)
    contact_name = models.CharField("Contact Name", max_length=128, blank=True)
    username = models.CharField("Username", max_length=64, default="admin")
    password_ciphertext = models.TextField(editable=False, default="")
    http_enabled = models.BooleanField("HTTP", default=False)
    direct_connect = models.CharField("Direct connect interface", max_length=8, blank=True)
    # the agent's direct-connect address (its server-info): a pair's heartbeats travel it too
    direct_ip = models.GenericIPAddressField("Direct connect address", protocol="IPv4", null=True, blank=True)
    # Its agent's TLS certificate, pinned at add (trust on first use, as SSH does): the SHA-256
    # fingerprint, "AB:CD:…". Blank only for an appliance recorded before pinning (its next
    # poll pins it). tls_presented: the other certificate it presented last, refused until an
    # Admin trusts it (blank when it presents the pinned one).
    tls_fingerprint = models.CharField("TLS certificate fingerprint (SHA-256)", max_length=95, blank=True)
    tls_presented = models.CharField("TLS certificate presented instead", max_length=95, blank=True)

    # What the last poll or event said (written by services only).
    reachability = models.CharField(
        "Reachability Status", max_length=12, choices=Reachability.choices, default=Reachability.UNKNOWN
    )
    ha_state = models.CharField("Current state", max_length=20, choices=HAState.choices, default=HAState.UNKNOWN)
    generation = models.PositiveBigIntegerField("Generation seen", default=0)
    services = models.JSONField(default=list, blank=True)  # [{name, version, admin_status, service_status}]
    last_event_seq = models.PositiveBigIntegerField(default=0)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    # its clock minus the portal's, as the last poll measured it (None: not measured yet)
    clock_offset_ms = models.IntegerField("Clock offset from the portal (ms)", null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["vip"],
                condition=Q(vip__isnull=False),
                name="appliance_vip_unique",
                violation_error_message="Another appliance already uses this virtual IP.",
            ),
            models.CheckConstraint(
                condition=Q(vip__isnull=True) | Q(vip_prefixlen__isnull=False),
                name="appliance_vip_has_netmask",
                violation_error_message="A virtual IP needs its netmask.",
            ),
            models.CheckConstraint(
                condition=Q(vip__isnull=True) | ~Q(vip=F("hm_ip")),
                name="appliance_vip_differs_from_hm_ip",
                violation_error_message="The Health Monitor IP and the VIP must be different.",
            ),
        ]
        # One per sort of the Mobility Services Engines list (selectors.APPLIANCE_SORTS), in its
        # order, so a page is a seek into the index, in either direction; each ends with the
        # unique name, so the key is total without the pk. Name and hm_ip sort by their unique indexes.
        indexes = [
            models.Index(fields=["device_type", "name"], name="appliance_type_name"),
            models.Index(fields=["version", "name"], name="appliance_version_name"),
            models.Index(fields=["reachability", "name"], name="appliance_reachability_name"),
        ]

    def __str__(self) -> str:
        return self.name

    # --- the password: write-only from the outside ---------------------------------
    def set_password(self, raw_password: str) -> None:
        self.password_ciphertext = crypto.encrypt(raw_password)

    def get_password(self) -> str:
        """Decrypt for the agent client only; never render or log the result."""
        return crypto.decrypt(self.password_ciphertext)

    @property
    def has_password(self) -> bool:
        return bool(self.password_ciphertext)

    # --- derived facts ----------------------------------------------------------------
    @property
    def is_virtual(self) -> bool:
        return self.device_type in VIRTUAL_TYPES

    @property
    def netmask(self) -> str | None:
        if self.vip_prefixlen is None:
            return None
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.vip_prefixlen}").netmask)

    @property
    def clock_offset_text(self) -> str:
        """'3.2 s ahead of the portal's clock' ("" not measured yet)."""
        if self.clock_offset_ms is None:
            return ""
        from hapairs.agent_client import describe_offset  # the client's wording, one place

        return f"{describe_offset(self.clock_offset_ms / 1000)} the portal's clock"

    @property
    def clock_skewed(self) -> bool:
        """Far enough off the portal's clock to be a trouble (CLOCK_SKEW_WARN_SECONDS)."""
        return self.clock_offset_ms is not None and abs(self.clock_offset_ms) >= 1000 * settings.CLOCK_SKEW_WARN_SECONDS

    @property
    def display_ip(self) -> str:
        """The list's IP Address column: the VIP once this primary is paired."""
        if self.vip and hasattr(self, "ha_pair_as_primary"):
            return self.vip
        return self.hm_ip


class LicenseFile(models.Model):
    """An uploaded license file, stored only after every line verified."""

    filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, unique=True)  # refuses the same file twice
    content = models.TextField()
    appliance = models.ForeignKey(Appliance, on_delete=models.PROTECT, related_name="license_files")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    uploaded_at = models.DateTimeField(auto_now_add=True)
    # The id the appliance's agent gave the file when it installed it (blank until then);
    # the removal job deletes it from the agent by this id.
    agent_license_id = models.CharField("Agent license id", max_length=64, blank=True)

    class Meta:
        ordering = ["-uploaded_at"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.appliance})"


class License(models.Model):
    """One feature line (INCREMENT) of a license file."""

    source_file = models.ForeignKey(LicenseFile, on_delete=models.CASCADE, related_name="licenses")
    feature = models.CharField(max_length=64)  # e.g. MSE_ACTIVATION, CAS_ELEMENTS
    sku = models.CharField("SKU", max_length=64, blank=True)  # e.g. L-MSE-7.0-K9
    vendor_string = models.CharField(max_length=255, blank=True)  # as signed, e.g. SKU=L-MSE-7.0-K9
    version = models.CharField(max_length=16, blank=True)
    count = models.PositiveIntegerField()
    host_udi = models.CharField("Host binding", max_length=128)  # a UDI, or ANY
    expires_on = models.DateField(null=True, blank=True)  # null: permanent
    is_evaluation = models.BooleanField(default=False)
    installed_on = models.ForeignKey(
        Appliance, null=True, blank=True, on_delete=models.PROTECT, related_name="licenses"
    )
    status = models.CharField(max_length=12, choices=LicenseStatus.choices, default=LicenseStatus.VERIFIED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["feature", "expires_on"]
        constraints = [models.CheckConstraint(condition=Q(count__gte=1), name="license_count_positive")]

    def __str__(self) -> str:
        return f"{self.feature} × {self.count}"

    @property
    def is_permanent(self) -> bool:
        return self.expires_on is None

    @property
    def canonical(self) -> str:
        """The signed form of the line (hapairs.licenses.canonical_form): equal lines are the same license."""

        return canonical_form(
            feature=self.feature,
            version=self.version,
            expires_on=self.expires_on,
            count=self.count,
            host_udi=self.host_udi,
            is_evaluation=self.is_evaluation,
            vendor_string=self.vendor_string or f"SKU={self.sku}",
        )


class HAPair(models.Model):
    """A primary backed by a secondary, with the parameters of the configure screen."""

    primary = models.OneToOneField(Appliance, on_delete=models.PROTECT, related_name="ha_pair_as_primary")
    secondary = models.ForeignKey(Appliance, on_delete=models.PROTECT, related_name="ha_pairs_as_secondary")
    slot = models.PositiveSmallIntegerField(help_text="Which of the secondary's instances backs this primary (1 or 2).")
    failover_type = models.CharField(
        "Failover Type", max_length=10, choices=SwitchType.choices, default=SwitchType.MANUAL
    )
    failback_type = models.CharField(
        "Failback Type", max_length=10, choices=SwitchType.choices, default=SwitchType.MANUAL
    )
    failover_wait = models.PositiveSmallIntegerField(
        "Long Failover Wait",
        default=FAILOVER_WAIT_DEFAULT,
        validators=[MinValueValidator(FAILOVER_WAIT_MIN), MaxValueValidator(FAILOVER_WAIT_MAX)],
        help_text="Seconds of missed heartbeats before an automatic failover.",
    )
    direct_connect = models.BooleanField("Direct connect used", default=False)
    generation = models.PositiveBigIntegerField(
        default=1, help_text="Fencing epoch, bumped on every change of who is in charge."
    )
    # The witnesses the portal configures (sent to both agents); what the agents *report* of
    # them is primary_witnesses / secondary_witnesses below. Empty: the portal sends none, and
    # whatever the agents' fleet files list stays.
    witness_addresses = models.JSONField(
        "Witnesses", default=list, blank=True, help_text='"IP:PORT" of each witness, as checked by the rules.'
    )
    witness_password_ciphertext = models.TextField(editable=False, default="")  # write-only, as an appliance's
    witness_mode = models.CharField(
        "When the witnesses cannot be reached and the primary is gone",
        max_length=12,
        choices=WitnessMode.choices,
        default=WitnessMode.SAFE,
    )

    # Instance identity on the secondary (spec §6), fixed by the slot.
    instance_db_name = models.CharField("Instance database name", max_length=16)
    instance_db_port = models.PositiveIntegerField("Instance database port")
    dataguard_name = models.CharField("Dataguard configuration name", max_length=16)
    primary_db_alias = models.CharField("Primary database alias", max_length=16)

    # Live status, as last polled or pushed.
    status_text = models.CharField("Status", max_length=200, blank=True)
    heartbeat = models.CharField("Heartbeats", max_length=8, choices=LinkStatus.choices, default=LinkStatus.UNKNOWN)
    replication = models.CharField(
        "Data Replication", max_length=12, choices=ReplicationStatus.choices, default=ReplicationStatus.UNKNOWN
    )
    sync_percent = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    # a synchronisation's progress: the most it reached and when; no progress for
    # MSEPORTAL_SYNC_STALL_SECONDS is "stuck at X %" (spec §8). Cleared once in sync.
    sync_best = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    sync_best_at = models.DateTimeField(null=True, blank=True)
    mean_heartbeat_ms = models.FloatField("Mean Heartbeat Response Time (ms)", null=True, blank=True)
    primary_state = models.CharField(max_length=20, choices=HAState.choices, default=HAState.UNKNOWN)
    secondary_state = models.CharField(max_length=20, choices=HAState.choices, default=HAState.UNKNOWN)
    primary_generation = models.PositiveBigIntegerField(default=0)  # as each node reports it
    secondary_generation = models.PositiveBigIntegerField(default=0)
    primary_services_up = models.BooleanField(default=False)  # False: stopped (failover, or by hand)
    secondary_services_up = models.BooleanField(default=False)
    primary_reachable = models.BooleanField(default=False)
    secondary_reachable = models.BooleanField(default=False)
    primary_in_charge = models.BooleanField(default=False)  # holds the VIP, by its own report
    secondary_in_charge = models.BooleanField(default=False)
    split_brain = models.BooleanField(default=False, help_text="Both nodes report being in charge of the VIP.")
    # the pair's network, as each node reports it: its heartbeat paths (hm / direct → up /
    # down), each witness's last answer ([{"address", "ok", "answer"}]), and a fenced primary
    primary_paths = models.JSONField(default=dict, blank=True)
    secondary_paths = models.JSONField(default=dict, blank=True)
    primary_witnesses = models.JSONField(default=list, blank=True)
    secondary_witnesses = models.JSONField(default=list, blank=True)
    primary_fenced = models.BooleanField(default=False)
    switch_allowed_at = models.DateTimeField(
        null=True, blank=True, help_text="End of the stabilisation window after the last failover or failback."
    )
    status_updated_at = models.DateTimeField(null=True, blank=True)
    last_failover_at = models.DateTimeField(null=True, blank=True)
    last_failback_at = models.DateTimeField(null=True, blank=True)

    # Maintenance mode: automatic failover paused while an operator works.
    maintenance = models.BooleanField(default=False)
    maintenance_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    maintenance_reason = models.CharField(max_length=500, blank=True)
    maintenance_since = models.DateTimeField(null=True, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "HA pair"
        ordering = ["primary__name"]
        constraints = [
            models.UniqueConstraint(fields=["secondary", "slot"], name="hapair_one_primary_per_secondary_slot"),
            models.CheckConstraint(
                condition=Q(slot__gte=1) & Q(slot__lte=MAX_PRIMARIES_PER_SECONDARY),
                name="hapair_at_most_two_primaries_per_secondary",
            ),
            models.CheckConstraint(condition=~Q(primary=F("secondary")), name="hapair_primary_is_not_secondary"),
            models.CheckConstraint(
                condition=Q(failover_wait__gte=FAILOVER_WAIT_MIN) & Q(failover_wait__lte=FAILOVER_WAIT_MAX),
                name="hapair_failover_wait_range",
            ),
            models.CheckConstraint(condition=Q(sync_percent__lte=100), name="hapair_sync_percent_range"),
            models.CheckConstraint(condition=Q(witness_mode__in=WitnessMode.values), name="hapair_witness_mode_valid"),
        ]
        permissions = [
            ("operate_hapair", "Can configure HA, activate, switch over and fail back"),
        ]

    def __str__(self) -> str:
        return f"{self.primary} → {self.secondary}"

    # --- the witness password: write-only from the outside, as an appliance's ----------
    def set_witness_password(self, raw_password: str) -> None:
        self.witness_password_ciphertext = crypto.encrypt(raw_password) if raw_password else ""

    def get_witness_password(self) -> str:
        """Decrypt for the configure request to the agents only; never render or log it."""
        return crypto.decrypt(self.witness_password_ciphertext) if self.witness_password_ciphertext else ""

    @property
    def has_witness_password(self) -> bool:
        return bool(self.witness_password_ciphertext)

    def assign_slot(self, slot: int) -> None:
        self.slot = slot
        for field, value in instance_identity(slot).items():
            setattr(self, field, value)


class HeartbeatSample(models.Model):
    """A pair's mean heartbeat response time, sampled at most once a minute (the status
    screen's chart and the health report's trend). Old samples are pruned by beat."""

    pair = models.ForeignKey(HAPair, on_delete=models.CASCADE, related_name="heartbeat_samples")
    at = models.DateTimeField()
    mean_ms = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["pair", "-at"], name="hbsample_pair_time")]

    def __str__(self) -> str:
        return f"{self.pair}: {self.mean_ms:.1f} ms at {self.at:%H:%M}"
