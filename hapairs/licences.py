"""Licence files: parse, verify, summarise and issue them (docs/licences.md), as plain Python.

No ORM and no I/O: callers hand in the file's bytes, the trusted public keys and today's
date, and get back a :class:`VerifiedLicenceFile` or one :class:`LicenceError` carrying a
sentence an operator understands. Only :func:`trusted_keys_from_settings` touches Django
(imported inside it), so the node agent could use this module without Django.

A file holds one ``INCREMENT`` line per feature, FlexLM-style::

    INCREMENT CAS_ELEMENTS 7.0 permanent 100 HOSTID=ANY VENDOR_STRING="SKU=L-CAS-ELEMENTS" SIGN=<base64>

Each line is signed with Ed25519 over its canonical form (:func:`canonical_form`), which
lists every field in a fixed order, so changing any field breaks the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import date
from typing import Iterable, Protocol, Sequence

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings  # read only in trusted_keys_from_settings: the rest needs no Django

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

# The shipped development key (hapairs/devkeys/dev_licence_public.pem, raw key in base64).
# Trusted only when DEBUG is on; see trusted_keys_from_settings().
DEV_PUBLIC_KEY_B64 = "4Geti9+NkDwlbe8hRQEupPAuIXWpgobqdHk/iV7QECU="


# --------------------------------------------------------------------------- the tables
@dataclass(frozen=True)
class Feature:
    name: str
    service: str | None  # the summary's Service; None: not a service licence (activation)
    label: str  # what the licence summary calls it
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
# is installed. The VA-Low row is the seed's licence summary (CAS 2000, wIPS 2000,
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
        limits[row[0]] = {service: int(cell) for service, cell in zip(header, row[1:])}
    return limits


PLATFORM_LIMITS = _parse_limits(PLATFORM_LIMITS_TABLE)


# --------------------------------------------------------------------------- results
class LicenceError(Exception):
    """A licence file (or the key configuration) was refused; ``str(e)`` is for the operator."""

    def __init__(self, message: str, *, line: int | None = None):
        self.message = f"Line {line}: {message}" if line is not None else message
        self.line = line
        super().__init__(self.message)


@dataclass(frozen=True)
class LicenceLine:
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
class VerifiedLicenceFile:
    sha256: str  # of the uploaded bytes: LicenseFile.sha256, which refuses the same file twice
    text: str  # the decoded file, for LicenseFile.content
    lines: tuple[LicenceLine, ...]


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
        f"INCREMENT {feature} {version} {expiry} {count} HOSTID={host_udi} "
        f'TYPE={kind} VENDOR_STRING="{vendor_string}"'
    )


def _message(canonical: str) -> bytes:
    return SIGNATURE_CONTEXT + canonical.encode("ascii")


# --------------------------------------------------------------------------- keys
def load_public_key(value: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    """A trusted key from a key object, a PEM ``PUBLIC KEY`` block, or the raw 32 bytes in base64."""
    if isinstance(value, Ed25519PublicKey):
        return value
    try:
        text = value.decode("ascii") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise LicenceError("A licence public key is not text: give a PEM block or the base64 of the 32-byte key.") from None
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeEncodeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise LicenceError(
            f"{shown!r} is not an Ed25519 public key: give a PEM PUBLIC KEY block or the base64 of "
            "the 32-byte key (as printed by `manage.py mklicense --generate-key`)."
        )
    return key


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 PEM Ed25519 private key (``mklicense --generate-key`` writes one)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise LicenceError("The key file is not an unencrypted PEM Ed25519 private key.")
    return key


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def dev_public_key() -> Ed25519PublicKey:
    return load_public_key(DEV_PUBLIC_KEY_B64)


def is_dev_key(key: Ed25519PublicKey) -> bool:
    return public_key_b64(key) == DEV_PUBLIC_KEY_B64


def _split_key_setting(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):  # an environment-style string: PEM blocks, or base64 keys split by commas/space
        if "-----BEGIN" in value:
            return re.findall(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", value, re.S)
        return [part for part in re.split(r"[\s,]+", value) if part]
    return [item for item in value if not (isinstance(item, str) and not item.strip())]  # type: ignore[union-attr]


def trusted_keys_from_settings() -> tuple[Ed25519PublicKey, ...]:
    """The public keys licence files must be signed with, from Django settings, read now.

    ``MSEPORTAL_LICENSE_PUBLIC_KEYS``: a list of keys, each a PEM ``PUBLIC KEY`` block or
    the base64 of the raw 32-byte Ed25519 key (a string of such keys separated by commas
    or spaces is accepted too). Empty or unset: the development key, only when ``DEBUG``
    is on. With ``DEBUG`` off the development key is refused even when listed.
    """
    debug = bool(getattr(settings, "DEBUG", False))
    entries = _split_key_setting(getattr(settings, "MSEPORTAL_LICENSE_PUBLIC_KEYS", None))
    keys: list[Ed25519PublicKey] = []
    for number, entry in enumerate(entries, start=1):
        try:
            keys.append(load_public_key(entry))
        except LicenceError as exc:
            raise LicenceError(f"MSEPORTAL_LICENSE_PUBLIC_KEYS entry {number}: {exc.message}") from None
    if not keys:
        if debug:
            return (dev_public_key(),)
        raise LicenceError(
            "No licence public key is configured, so no licence can be verified: set "
            "MSEPORTAL_LICENSE_PUBLIC_KEYS (make a key pair with `manage.py mklicense --generate-key DIR`). "
            "The development key is trusted only when DEBUG is on."
        )
    if not debug and any(is_dev_key(key) for key in keys):
        raise LicenceError(
            "MSEPORTAL_LICENSE_PUBLIC_KEYS lists the development public key (hapairs/devkeys/), which is "
            "refused when DEBUG is off because its private key is public: remove it and list your own key."
        )
    return tuple(keys)


# --------------------------------------------------------------------------- parsing
_VERSION_RE = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNT_RE = re.compile(r"[1-9][0-9]*")  # no sign, no leading zeros: one spelling per count
_UDI_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}")
_SKU_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VENDOR_RE = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII; quotes and backslashes checked apart
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_KEYWORDS = ("HOSTID", "TYPE", "VENDOR_STRING", "SIGN")
_MAX_COUNT_DIGITS = 9
_FORMAT_HINT = 'INCREMENT FEATURE VERSION EXPIRY COUNT HOSTID=... VENDOR_STRING="SKU=..." SIGN=...'


def _describe(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def check_size(size: int, *, max_bytes: int = MAX_BYTES) -> None:
    """Refuse a file of ``size`` bytes past the limit (before reading it: an upload may be huge)."""
    if size > max_bytes:
        raise LicenceError(
            f"The licence file is {size:,} bytes; the limit is {max_bytes // 1024} KiB ({max_bytes:,} bytes). "
            "A licence file is plain text of a few lines: check that you picked the right file."
        )


def _decode(data: bytes, max_bytes: int) -> str:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LicenceError("The licence file must be given as bytes.")
    data = bytes(data)
    check_size(len(data), max_bytes=max_bytes)
    if not data.strip():
        raise LicenceError("The licence file is empty.")
    if b"\x00" in data:
        raise LicenceError("The licence file is not a text file (it contains binary data).")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LicenceError("The licence file is not a text file (it is not valid UTF-8 text).") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    for ch in text:
        if (ch < " " and ch not in "\t\r\n") or ch == "\x7f" or "\x80" <= ch <= "\x9f":
            raise LicenceError(
                f"The licence file is not a text file (it contains the control character U+{ord(ch):04X})."
            )
    return text


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) per non-blank, non-comment line; ``\\`` at the end continues a line."""
    physical = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while physical and not physical[-1].strip(" \t"):  # trailing blank lines: the end of the file
        physical.pop()
    result: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(physical, start=1):
        stripped = raw.strip(" \t")
        if pending:
            if not stripped or stripped.startswith("#"):
                raise LicenceError(
                    "ends with '\\' but the next line is blank or a comment: the line seems truncated.", line=start
                )
        elif not stripped or stripped.startswith("#"):
            continue
        else:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip(" \t"))
            continue
        pending.append(stripped)
        result.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        raise LicenceError("ends with '\\' at the end of the file: the file seems truncated.", line=start)
    return result


def _tokenize(text: str, line: int) -> list[tuple[str, str | None]]:
    """Split on blanks into (word, None) or (KEY, value); a value may be "double quoted"."""
    tokens: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        start = i
        while i < n and text[i] not in ' \t"':
            i += 1
        word = text[start:i]
        if i < n and text[i] == '"':
            if not word.endswith("=") or word.count("=") != 1 or len(word) == 1:
                raise LicenceError(f'a double quote may only open a value, as in KEY="...": near {_describe(word)}.', line=line)
            close = text.find('"', i + 1)
            if close == -1:
                raise LicenceError(f"the quoted value of {word[:-1]} is never closed: the line seems truncated.", line=line)
            value = text[i + 1 : close]
            i = close + 1
            if i < n and text[i] not in " \t":
                raise LicenceError(f"text follows the closing quote of {word[:-1]} without a space.", line=line)
            tokens.append((word[:-1], value))
        elif "=" in word:
            key, _, value = word.partition("=")
            tokens.append((key, value))
        else:
            tokens.append((word, None))
    return tokens


def _parse_line(line: int | None, text: str) -> tuple[LicenceLine, bytes]:
    """Parse one logical line (not yet verified): the line and its raw signature."""
    for ch in text:
        if not (" " <= ch <= "~" or ch == "\t"):
            raise LicenceError(f"contains the character {ch!r}, which a licence line may not hold (ASCII only).", line=line)
    tokens = _tokenize(text, line)
    if tokens[0] != ("INCREMENT", None):
        raise LicenceError(f"expected an INCREMENT line, found {_describe(text)}; the format is {_FORMAT_HINT}.", line=line)
    positional = []
    for word, value in tokens[1:5]:
        if value is not None:
            break
        positional.append(word)
    if positional:
        feature_name = positional[0]
        if feature_name not in FEATURES:
            known = ", ".join(FEATURES)
            raise LicenceError(f"unknown feature {_describe(feature_name)}; known features are {known}.", line=line)
    if len(positional) < 4:
        raise LicenceError(
            f"the line is incomplete (the file may be truncated): expected {_FORMAT_HINT}, found {_describe(text)}.",
            line=line,
        )
    feature_name, version, expiry, count_text = positional
    feature = FEATURES[feature_name]
    tag = f"{feature_name}: "

    keywords: dict[str, str] = {}
    for word, value in tokens[5:]:
        if value is None:
            raise LicenceError(f"{tag}unexpected {_describe(word)}; after the count only KEY=VALUE fields may follow.", line=line)
        if word not in _KEYWORDS:
            raise LicenceError(f"{tag}unknown field {word}=; the fields are {', '.join(k + '=' for k in _KEYWORDS)}.", line=line)
        if word in keywords:
            raise LicenceError(f"{tag}{word}= appears twice.", line=line)
        keywords[word] = value

    if not _VERSION_RE.fullmatch(version):
        raise LicenceError(f"{tag}version {_describe(version)} is not a version number such as 7.0.", line=line)

    if expiry == PERMANENT:
        expires_on = None
    else:
        expires_on = None
        if _DATE_RE.fullmatch(expiry):
            try:
                expires_on = date.fromisoformat(expiry)
            except ValueError:
                pass
        if expires_on is None:
            raise LicenceError(
                f"{tag}expiry date {_describe(expiry)} is malformed: write a date as YYYY-MM-DD, or permanent.", line=line
            )

    if not _COUNT_RE.fullmatch(count_text) or len(count_text) > _MAX_COUNT_DIGITS or int(count_text) < 1:
        raise LicenceError(
            f"{tag}count {_describe(count_text)} is not a positive whole number (1 to {10**_MAX_COUNT_DIGITS - 1:,}).",
            line=line,
        )
    count = int(count_text)

    if "HOSTID" not in keywords:
        raise LicenceError(f"{tag}HOSTID= is missing (a UDI, or ANY).", line=line)
    host = keywords["HOSTID"]
    if host != ANY_HOST and not _UDI_RE.fullmatch(host):
        raise LicenceError(f"{tag}HOSTID {_describe(host)} is neither ANY nor a UDI such as AIR-MSE-3355-K9:V01:KQ45xx.", line=line)
    if host == ANY_HOST and feature.needs_host:
        raise LicenceError(f"{tag}this licence must be bound to one appliance's UDI, not HOSTID=ANY.", line=line)

    kind = keywords.get("TYPE", TYPE_STANDARD)
    if kind not in (TYPE_STANDARD, TYPE_EVALUATION):
        raise LicenceError(f"{tag}TYPE {_describe(kind)} is neither standard nor evaluation.", line=line)
    is_evaluation = kind == TYPE_EVALUATION
    if is_evaluation and expires_on is None:
        raise LicenceError(f"{tag}an evaluation licence must have an expiry date, not permanent.", line=line)

    vendor = keywords.get("VENDOR_STRING")
    if vendor is None:
        raise LicenceError(f'{tag}VENDOR_STRING= is missing (VENDOR_STRING="SKU=...").', line=line)
    if not _VENDOR_RE.fullmatch(vendor) or '"' in vendor or "\\" in vendor:
        raise LicenceError(f"{tag}VENDOR_STRING must be 1 to 255 printable characters without quotes or backslashes.", line=line)
    items = dict(item.partition("=")[::2] for item in vendor.split(";"))
    sku = items.get("SKU", "")
    if not _SKU_RE.fullmatch(sku):
        raise LicenceError(f'{tag}VENDOR_STRING has no valid SKU (write VENDOR_STRING="SKU=...").', line=line)
    if feature.fixed_sku and sku != feature.default_sku:
        raise LicenceError(f"{tag}the SKU must be {feature.default_sku}, not {sku}.", line=line)

    signature_text = keywords.get("SIGN")
    if not signature_text:
        raise LicenceError(f"{tag}the line has no signature (SIGN=...); it cannot be trusted.", line=line)
    signature = b""
    if _B64_RE.fullmatch(signature_text):
        try:
            signature = base64.b64decode(signature_text, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
    if len(signature) != 64:
        raise LicenceError(
            f"{tag}the signature is damaged or truncated: SIGN= must hold 88 base64 characters (an Ed25519 signature).",
            line=line,
        )

    parsed = LicenceLine(
        line_no=line,
        feature=feature_name,
        sku=sku,
        version=version,
        count=count,
        host_udi=host,
        expires_on=expires_on,
        is_evaluation=is_evaluation,
        vendor_string=vendor,
        signature=signature_text,
        text=text,
    )
    return parsed, signature


def parse_and_verify(
    data: bytes,
    *,
    trusted_keys: Sequence[Ed25519PublicKey | str | bytes],
    today: date,
    host_udi: str | None = None,
    max_bytes: int = MAX_BYTES,
) -> VerifiedLicenceFile:
    """Parse a licence file and verify every line, or raise LicenceError with the first problem.

    Every line must be signed by one of ``trusted_keys`` and not be expired on ``today``;
    with ``host_udi`` every line must also be bound to that UDI or to ANY (see check_host).
    """
    keys = [load_public_key(key) for key in trusted_keys]
    if not keys:
        raise LicenceError("No trusted licence public key is configured, so no licence can be verified.")
    text = _decode(data, max_bytes)
    logical = _logical_lines(text)
    if not logical:
        raise LicenceError("The licence file holds no INCREMENT line (only comments or blank lines).")
    verified: list[LicenceLine] = []
    seen: dict[str, int] = {}
    for number, line_text in logical:
        line, signature = _parse_line(number, line_text)
        message = _message(line.canonical)
        if not any(_verifies(key, signature, message) for key in keys):
            dev = dev_public_key()
            if not any(is_dev_key(key) for key in keys) and _verifies(dev, signature, message):
                raise LicenceError(
                    f"{line.feature}: signed with the development key, which this portal refuses "
                    "(it is trusted only when DEBUG is on).",
                    line=number,
                )
            raise LicenceError(
                f"{line.feature}: the signature does not match this line: a field (such as the count) was "
                "changed after signing, or the file was signed by a key this portal does not trust.",
                line=number,
            )
        if line.expires_on is not None and line.expires_on < today:
            kind = "evaluation licence" if line.is_evaluation else "licence"
            raise LicenceError(f"{line.feature}: this {kind} expired on {line.expires_on.isoformat()}.", line=number)
        if line.canonical in seen:
            raise LicenceError(f"{line.feature}: the same licence appears twice (first on line {seen[line.canonical]}).", line=number)
        seen[line.canonical] = number
        verified.append(line)
    result = VerifiedLicenceFile(sha256=hashlib.sha256(bytes(data)).hexdigest(), text=text, lines=tuple(verified))
    if host_udi is not None:
        check_host(result, host_udi)
    return result


def _verifies(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def check_host(verified: VerifiedLicenceFile, udi: str, *, appliance: str | None = None) -> None:
    """Refuse a file with any line bound to a UDI other than ``udi`` (HOSTID=ANY fits every host)."""
    target = f"{appliance} ({udi})" if appliance and udi else appliance or udi
    for line in verified.lines:
        if line.host_udi == ANY_HOST:
            continue
        if not udi:
            raise LicenceError(
                f"{line.feature}: this licence is bound to {line.host_udi}, but the target appliance's UDI is "
                "not known yet: let the portal contact the appliance first.",
                line=line.line_no,
            )
        if line.host_udi != udi:
            raise LicenceError(
                f"{line.feature}: this licence is bound to another appliance ({line.host_udi}), not to {target}.",
                line=line.line_no,
            )


# --------------------------------------------------------------------------- summary
class LicenceLike(Protocol):
    """A verified LicenceLine or a stored hapairs.models.License row."""

    feature: str
    count: int
    expires_on: date | None
    is_evaluation: bool


SUMMARY_PERMANENT = "Permanent"
SUMMARY_TERM = "Term"  # not an evaluation, but with an expiry date
SUMMARY_EVALUATION = "Evaluation"
SUMMARY_EXPIRED = "Expired"
SUMMARY_NONE = "Not installed"
_TYPE_ORDER = {SUMMARY_PERMANENT: 0, SUMMARY_TERM: 1, SUMMARY_EVALUATION: 2, SUMMARY_EXPIRED: 3}


@dataclass(frozen=True)
class SummaryRow:
    """One row of the licence summary (Service, Platform Limit, Type, Installed Limit)."""

    service: str  # CAS, wIPS, MSAP
    platform_limit: int  # from PLATFORM_LIMITS for the device type
    type: str  # Permanent, Term, Evaluation, Expired, or Not installed
    feature: str  # e.g. CAS_ELEMENTS; "" on a Not installed row
    label: str  # e.g. "CAS Elements"; "" on a Not installed row
    installed_limit: int  # licensed count (an Expired row shows what it held; it no longer counts)
    expires_on: date | None = None
    days_left: int | None = None  # Evaluation and Term rows: days until expiry (0: last day)

    @property
    def counts(self) -> bool:
        return self.type not in (SUMMARY_EXPIRED, SUMMARY_NONE)


def _summary_type(licence: LicenceLike, today: date) -> str:
    if licence.expires_on is None:
        return SUMMARY_PERMANENT
    if licence.expires_on < today:
        return SUMMARY_EXPIRED
    return SUMMARY_EVALUATION if licence.is_evaluation else SUMMARY_TERM


def licence_summary(device_type: str, licences: Iterable[LicenceLike], today: date) -> list[SummaryRow]:
    """The licence summary of one appliance: per service, per feature and type, summed counts.

    Permanent licences of a feature add up into one row; evaluation and term licences are
    grouped by expiry date and show the days left; expired ones show as Expired and stop
    counting. A service with no licence gets one Not installed row. Activation licences
    are not a service: see is_activated().
    """
    if device_type not in PLATFORM_LIMITS:
        raise ValueError(f"unknown device type {device_type!r}; known: {', '.join(PLATFORM_LIMITS)}")
    limits = PLATFORM_LIMITS[device_type]
    feature_order = {name: index for index, name in enumerate(FEATURES)}
    totals: dict[tuple[str, str, str, date | None], int] = {}
    for licence in licences:
        feature = FEATURES.get(licence.feature)
        if feature is None or feature.service is None:
            continue
        kind = _summary_type(licence, today)
        key = (feature.service, licence.feature, kind, licence.expires_on)
        totals[key] = totals.get(key, 0) + licence.count
    rows: list[SummaryRow] = []
    for service in SERVICES:
        keys = sorted(
            (key for key in totals if key[0] == service),
            key=lambda k: (feature_order[k[1]], _TYPE_ORDER[k[2]], k[3] or date.min),
        )
        if not keys:
            rows.append(SummaryRow(service, limits[service], SUMMARY_NONE, "", "", 0))
            continue
        for _, name, kind, expires_on in keys:
            days = (expires_on - today).days if kind in (SUMMARY_EVALUATION, SUMMARY_TERM) and expires_on else None
            rows.append(
                SummaryRow(
                    service=service,
                    platform_limit=limits[service],
                    type=kind,
                    feature=name,
                    label=FEATURES[name].label,
                    installed_limit=totals[(service, name, kind, expires_on)],
                    expires_on=expires_on,
                    days_left=days,
                )
            )
    return rows


def installed_counts(licences: Iterable[LicenceLike], today: date) -> dict[str, int]:
    """Per feature, the count of licences that have not expired on ``today``."""
    counts: dict[str, int] = {}
    for licence in licences:
        if licence.expires_on is None or licence.expires_on >= today:
            counts[licence.feature] = counts.get(licence.feature, 0) + licence.count
    return counts


def is_activated(licences: Iterable[LicenceLike], today: date) -> bool:
    """Whether an unexpired MSE_ACTIVATION licence is among ``licences`` (those installed on one VA)."""
    return installed_counts(licences, today).get(ACTIVATION_FEATURE, 0) > 0


# --------------------------------------------------------------------------- issuing
@dataclass(frozen=True)
class LicenceSpec:
    """What to issue on one line (mklicense builds these)."""

    feature: str
    count: int
    host_udi: str = ANY_HOST
    expires_on: date | None = None
    is_evaluation: bool = False
    version: str = "7.0"
    sku: str | None = None  # None: the feature's default SKU


def check_spec(spec: LicenceSpec) -> None:
    """Refuse, field by field, a spec the verifier would refuse once signed."""
    feature = FEATURES.get(spec.feature)
    if feature is None:
        raise LicenceError(f"unknown feature {spec.feature!r}; known features are {', '.join(FEATURES)}.")
    tag = f"{spec.feature}: "
    if not isinstance(spec.count, int) or not 1 <= spec.count < 10**_MAX_COUNT_DIGITS:
        raise LicenceError(f"{tag}count {spec.count!r} is not a positive whole number (1 to {10**_MAX_COUNT_DIGITS - 1:,}).")
    if spec.host_udi != ANY_HOST and not _UDI_RE.fullmatch(spec.host_udi):
        raise LicenceError(f"{tag}HOSTID {_describe(spec.host_udi)} is neither ANY nor a UDI such as AIR-MSE-3355-K9:V01:KQ45xx.")
    if spec.host_udi == ANY_HOST and feature.needs_host:
        raise LicenceError(f"{tag}this licence must be bound to one appliance's UDI, not HOSTID=ANY.")
    if not _VERSION_RE.fullmatch(spec.version):
        raise LicenceError(f"{tag}version {_describe(spec.version)} is not a version number such as 7.0.")
    if spec.is_evaluation and spec.expires_on is None:
        raise LicenceError(f"{tag}an evaluation licence must have an expiry date, not permanent.")
    sku = spec.sku or feature.default_sku
    if not _SKU_RE.fullmatch(sku):
        raise LicenceError(f"{tag}SKU {_describe(sku)} is not a SKU such as L-MSE-7.0-K9.")
    if feature.fixed_sku and sku != feature.default_sku:
        raise LicenceError(f"{tag}the SKU must be {feature.default_sku}, not {sku}.")


def sign_line(spec: LicenceSpec, private_key: Ed25519PrivateKey) -> str:
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
    signature = base64.b64encode(private_key.sign(_message(canonical))).decode("ascii")
    line = f"{canonical} SIGN={signature}"
    _parse_line(None, line)  # the same checks as on upload: a bad spec never becomes a file
    return line


def render_licence_file(specs: Sequence[LicenceSpec], private_key: Ed25519PrivateKey, *, comment: str = "") -> str:
    """A whole licence file: optional ``#`` comment lines, then one signed line per spec."""
    if not specs:
        raise LicenceError("A licence file needs at least one feature.")
    header = "".join(f"# {part}\n" for part in comment.splitlines()) if comment else ""
    return header + "".join(sign_line(spec, private_key) + "\n" for spec in specs)
