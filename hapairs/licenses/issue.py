"""Issuing: one signed INCREMENT line per :class:`LicenseSpec` (what mklicense writes),
refused field by field where the verifier would refuse it."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hapairs.licenses.format import ANY_HOST, FEATURES, LicenseError, canonical_form, signed_message
from hapairs.licenses.parser import MAX_COUNT_DIGITS, SKU_RE, UDI_RE, VERSION_RE, describe, parse_line


# --------------------------------------------------------------------------- issuing
@dataclass(frozen=True)
class LicenseSpec:
    """What to issue on one line (mklicense builds these)."""

    feature: str
    count: int
    host_udi: str = ANY_HOST
    expires_on: date | None = None
    is_evaluation: bool = False
    version: str = "7.0"
    sku: str | None = None  # None: the feature's default SKU


def check_spec(spec: LicenseSpec) -> None:
    """Refuse, field by field, a spec the verifier would refuse once signed."""
    feature = FEATURES.get(spec.feature)
    if feature is None:
        raise LicenseError(f"unknown feature {spec.feature!r}; known features are {', '.join(FEATURES)}.")
    tag = f"{spec.feature}: "
    if not isinstance(spec.count, int) or not 1 <= spec.count < 10**MAX_COUNT_DIGITS:
        raise LicenseError(
            f"{tag}count {spec.count!r} is not a positive whole number (1 to {10**MAX_COUNT_DIGITS - 1:,})."
        )
    if spec.host_udi != ANY_HOST and not UDI_RE.fullmatch(spec.host_udi):
        raise LicenseError(
            f"{tag}HOSTID {describe(spec.host_udi)} is neither ANY nor a UDI such as AIR-MSE-3355-K9:V01:KQ45xx."
        )
    if spec.host_udi == ANY_HOST and feature.needs_host:
        raise LicenseError(f"{tag}this license must be bound to one appliance's UDI, not HOSTID=ANY.")
    if not VERSION_RE.fullmatch(spec.version):
        raise LicenseError(f"{tag}version {describe(spec.version)} is not a version number such as 7.0.")
    if spec.is_evaluation and spec.expires_on is None:
        raise LicenseError(f"{tag}an evaluation license must have an expiry date, not permanent.")
    sku = spec.sku or feature.default_sku
    if not SKU_RE.fullmatch(sku):
        raise LicenseError(f"{tag}SKU {describe(sku)} is not a SKU such as L-MSE-7.0-K9.")
    if feature.fixed_sku and sku != feature.default_sku:
        raise LicenseError(f"{tag}the SKU must be {feature.default_sku}, not {sku}.")


def sign_line(spec: LicenseSpec, private_key: Ed25519PrivateKey) -> str:
    """One signed INCREMENT line, in canonical form followed by SIGN=. Refuses what the verifier would."""
    check_spec(spec)
    sku = spec.sku or FEATURES[spec.feature].default_sku
    canonical = canonical_form(
        feature=spec.feature,
        version=spec.version,
        expires_on=spec.expires_on,
        count=spec.count,
        host_udi=spec.host_udi,
        is_evaluation=spec.is_evaluation,
        vendor_string=f"SKU={sku}",
    )
    signature = base64.b64encode(private_key.sign(signed_message(canonical))).decode("ascii")
    line = f"{canonical} SIGN={signature}"
    parse_line(None, line)  # the same checks as on upload: a bad spec never becomes a file
    return line


def render_license_file(specs: Sequence[LicenseSpec], private_key: Ed25519PrivateKey, *, comment: str = "") -> str:
    """A whole license file: optional ``#`` comment lines, then one signed line per spec."""
    if not specs:
        raise LicenseError("A license file needs at least one feature.")
    header = "".join(f"# {part}\n" for part in comment.splitlines()) if comment else ""
    return header + "".join(sign_line(spec, private_key) + "\n" for spec in specs)
