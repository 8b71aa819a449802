"""The verifier: every line parsed, signed by a trusted key, unexpired, not repeated, and
(when asked) bound to the target appliance's UDI."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hapairs.licenses.format import ANY_HOST, MAX_BYTES, LicenseError, LicenseLine, VerifiedLicenseFile, signed_message
from hapairs.licenses.keys import dev_public_key, is_dev_key, load_public_key
from hapairs.licenses.parser import decode, logical_lines, parse_line


def parse_and_verify(
    data: bytes,
    *,
    trusted_keys: Sequence[Ed25519PublicKey | str | bytes],
    today: date,
    host_udi: str | None = None,
    max_bytes: int = MAX_BYTES,
) -> VerifiedLicenseFile:
    """Parse a license file and verify every line, or raise LicenseError with the first problem.

    Every line must be signed by one of ``trusted_keys`` and not be expired on ``today``;
    with ``host_udi`` every line must also be bound to that UDI or to ANY (see check_host).
    """
    keys = [load_public_key(key) for key in trusted_keys]
    if not keys:
        raise LicenseError("No trusted license public key is configured, so no license can be verified.")
    text = decode(data, max_bytes)
    logical = logical_lines(text)
    if not logical:
        raise LicenseError("The license file holds no INCREMENT line (only comments or blank lines).")
    verified: list[LicenseLine] = []
    seen: dict[str, int] = {}
    for number, line_text in logical:
        line, signature = parse_line(number, line_text)
        message = signed_message(line.canonical)
        if not any(_verifies(key, signature, message) for key in keys):
            dev = dev_public_key()
            if not any(is_dev_key(key) for key in keys) and _verifies(dev, signature, message):
                raise LicenseError(
                    f"{line.feature}: signed with the development key, which this portal refuses "
                    "(it is trusted only when DEBUG is on).",
                    line=number,
                )
            raise LicenseError(
                f"{line.feature}: the signature does not match this line: a field (such as the count) was "
                "changed after signing, or the file was signed by a key this portal does not trust.",
                line=number,
            )
        if line.expires_on is not None and line.expires_on < today:
            kind = "evaluation license" if line.is_evaluation else "license"
            raise LicenseError(f"{line.feature}: this {kind} expired on {line.expires_on.isoformat()}.", line=number)
        if line.canonical in seen:
            raise LicenseError(
                f"{line.feature}: the same license appears twice (first on line {seen[line.canonical]}).", line=number
            )
        seen[line.canonical] = number
        verified.append(line)
    result = VerifiedLicenseFile(sha256=hashlib.sha256(bytes(data)).hexdigest(), text=text, lines=tuple(verified))
    if host_udi is not None:
        check_host(result, host_udi)
    return result


def _verifies(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def check_host(verified: VerifiedLicenseFile, udi: str, *, appliance: str | None = None) -> None:
    """Refuse a file with any line bound to a UDI other than ``udi`` (HOSTID=ANY fits every host)."""
    target = f"{appliance} ({udi})" if appliance and udi else appliance or udi
    for line in verified.lines:
        if line.host_udi == ANY_HOST:
            continue
        if not udi:
            raise LicenseError(
                f"{line.feature}: this license is bound to {line.host_udi}, but the target appliance's UDI is "
                "not known yet: let the portal contact the appliance first.",
                line=line.line_no,
            )
        if line.host_udi != udi:
            raise LicenseError(
                f"{line.feature}: this license is bound to another appliance ({line.host_udi}), not to {target}.",
                line=line.line_no,
            )
