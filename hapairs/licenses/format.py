"""The license file format's constants, tables and results, and the canonical form a
line's signature covers (docs/licenses.md). Plain Python: no Django, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# --------------------------------------------------------------------------- limits
MAX_BYTES = 64 * 1024  # a real file is a few hundred bytes; refuse anything past 64 KiB
SIGNATURE_CONTEXT = b"MSE-LICENCE-1\n"  # prefixed to every signed message (domain separation)
EVALUATION_DAYS = 60  # what mklicense --evaluation issues when no date is given
ACTIVATION_FEATURE = "MSE_ACTIVATION"
ACTIVATION_SKU = "L-MSE-7.0-K9"
ANY_HOST = "ANY"
PERMANENT = "permanent"
TYPE_STANDARD = "standard"
TYPE_EVALUATION = "evaluation"

# The shipped development key (hapairs/devkeys/dev_license_public.pem, raw key in base64).
# Trusted only when DEBUG is on; see trusted_keys_from_settings().
DEV_PUBLIC_KEY_B64 = "4Geti9+NkDwlbe8hRQEupPAuIXWpgobqdHk/iV7QECU="


# --------------------------------------------------------------------------- the tables
@dataclass(frozen=True)
class Feature:
    name: str
    service: str | None  # the summary's Service; None: not a service license (activation)
    label: str  # what the license summary calls it
    default_sku: str  # what mklicense writes into VENDOR_STRING
    fixed_sku: bool  # the SKU must be exactly default_sku
    needs_host: bool  # HOSTID=ANY is refused


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        # name               service  label                             default SKU        fixed  needs host
        Feature("MSE_ACTIVATION", None, "Activation", ACTIVATION_SKU, True, True),
        Feature("CAS_ELEMENTS", "CAS", "CAS Elements", "L-CAS-ELEMENTS", False, False),
        Feature("WIPS_MONITOR_APS", "wIPS", "wIPS Monitor Mode APs", "L-WIPS-MM-APS", False, False),
        Feature("WIPS_LOCAL_APS", "wIPS", "wIPS Local Mode APs", "L-WIPS-LM-APS", False, False),
        Feature("MSAP_CLICKS", "MSAP", "Service Advertisement Clicks", "L-MSAP-CLICKS", False, False),
    )
}

# Platform limits per device type and service: the most each platform supports, whatever
# is installed. The VA-Low row is the seed's license summary (CAS 2000, wIPS 2000,
# MSAP 2000); the other rows are the platforms' published capacities, MSAP taken equal
# to CAS where no figure is published. This table is the one place to correct them.
PLATFORM_LIMITS_TABLE = """
device        CAS     wIPS    MSAP
3310          2000    2000    2000
3350          18000   3000    18000
3355          25000   5000    25000
3365          50000   10000   50000
VA-Low        2000    2000    2000
VA-Standard   18000   5000    18000
VA-High       50000   10000   50000
"""
SERVICES = ("CAS", "wIPS", "MSAP")  # the summary's row order


def _parse_limits(table: str) -> dict[str, dict[str, int]]:
    rows = [line.split() for line in table.strip().splitlines()]
    header = rows[0][1:]
    limits: dict[str, dict[str, int]] = {}
    for row in rows[1:]:
        if len(row) != len(header) + 1:
            raise ValueError(f"platform limits row {row[0]} has {len(row) - 1} cells for {len(header)} services")
        limits[row[0]] = {service: int(cell) for service, cell in zip(header, row[1:], strict=True)}
    return limits


PLATFORM_LIMITS = _parse_limits(PLATFORM_LIMITS_TABLE)


# --------------------------------------------------------------------------- results
class LicenseError(Exception):
    """A license file (or the key configuration) was refused; ``str(e)`` is for the operator."""

    def __init__(self, message: str, *, line: int | None = None):
        self.message = f"Line {line}: {message}" if line is not None else message
        self.line = line
        super().__init__(self.message)


@dataclass(frozen=True)
class LicenseLine:
    """One verified INCREMENT line."""

    line_no: int  # the (first) physical line it starts on, from 1
    feature: str
    sku: str
    version: str
    count: int
    host_udi: str  # a UDI, or "ANY"
    expires_on: date | None  # None: permanent; otherwise valid through this day
    is_evaluation: bool
    vendor_string: str
    signature: str  # base64, as in the file
    text: str  # the line as written (continuations joined by one space)

    @property
    def canonical(self) -> str:
        return canonical_form(
            feature=self.feature,
            version=self.version,
            expires_on=self.expires_on,
            count=self.count,
            host_udi=self.host_udi,
            is_evaluation=self.is_evaluation,
            vendor_string=self.vendor_string,
        )

    def days_left(self, today: date) -> int | None:
        """Days until expiry (0 on the last valid day, negative once expired); None if permanent."""
        return None if self.expires_on is None else (self.expires_on - today).days


@dataclass(frozen=True)
class VerifiedLicenseFile:
    sha256: str  # of the uploaded bytes: LicenseFile.sha256, which refuses the same file twice
    text: str  # the decoded file, for LicenseFile.content
    lines: tuple[LicenseLine, ...]


# --------------------------------------------------------------------------- canonical form
def canonical_form(
    *,
    feature: str,
    version: str,
    expires_on: date | None,
    count: int,
    host_udi: str,
    is_evaluation: bool,
    vendor_string: str,
) -> str:
    """The text a line's signature covers: every field, in this order, single spaces.

    ``INCREMENT <feature> <version> <permanent|YYYY-MM-DD> <count> HOSTID=<udi|ANY>
    TYPE=<standard|evaluation> VENDOR_STRING="<vendor string>"`` — the count in plain
    decimal, TYPE always present, the vendor string always quoted. The signed message is
    ``SIGNATURE_CONTEXT`` followed by this text in ASCII.
    """
    expiry = PERMANENT if expires_on is None else expires_on.isoformat()
    kind = TYPE_EVALUATION if is_evaluation else TYPE_STANDARD
    return (
        f'INCREMENT {feature} {version} {expiry} {count} HOSTID={host_udi} TYPE={kind} VENDOR_STRING="{vendor_string}"'
    )


def signed_message(canonical: str) -> bytes:
    return SIGNATURE_CONTEXT + canonical.encode("ascii")
