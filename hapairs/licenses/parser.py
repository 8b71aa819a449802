"""The parser: bytes to logical lines to one :class:`LicenseLine` per INCREMENT line,
every field checked (the signature is checked by hapairs.licenses.verify)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date

from hapairs.licenses.format import (
    ANY_HOST,
    FEATURES,
    MAX_BYTES,
    PERMANENT,
    TYPE_EVALUATION,
    TYPE_STANDARD,
    LicenseError,
    LicenseLine,
)

# --------------------------------------------------------------------------- parsing
VERSION_RE = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNT_RE = re.compile(r"[1-9][0-9]*")  # no sign, no leading zeros: one spelling per count
UDI_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}")
SKU_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VENDOR_RE = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII; quotes and backslashes checked apart
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_KEYWORDS = ("HOSTID", "TYPE", "VENDOR_STRING", "SIGN")
MAX_COUNT_DIGITS = 9
_FORMAT_HINT = 'INCREMENT FEATURE VERSION EXPIRY COUNT HOSTID=... VENDOR_STRING="SKU=..." SIGN=...'


def describe(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def check_size(size: int, *, max_bytes: int = MAX_BYTES) -> None:
    """Refuse a file of ``size`` bytes past the limit (before reading it: an upload may be huge)."""
    if size > max_bytes:
        raise LicenseError(
            f"The license file is {size:,} bytes; the limit is {max_bytes // 1024} KiB ({max_bytes:,} bytes). "
            "A license file is plain text of a few lines: check that you picked the right file."
        )


def decode(data: bytes, max_bytes: int) -> str:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LicenseError("The license file must be given as bytes.")
    data = bytes(data)
    check_size(len(data), max_bytes=max_bytes)
    if not data.strip():
        raise LicenseError("The license file is empty.")
    if b"\x00" in data:
        raise LicenseError("The license file is not a text file (it contains binary data).")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LicenseError("The license file is not a text file (it is not valid UTF-8 text).") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    for ch in text:
        if (ch < " " and ch not in "\t\r\n") or ch == "\x7f" or "\x80" <= ch <= "\x9f":
            raise LicenseError(
                f"The license file is not a text file (it contains the control character U+{ord(ch):04X})."
            )
    return text


def logical_lines(text: str) -> list[tuple[int, str]]:
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
                raise LicenseError(
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
        raise LicenseError("ends with '\\' at the end of the file: the file seems truncated.", line=start)
    return result


def _tokenize(text: str, line: int | None) -> list[tuple[str, str | None]]:
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
                raise LicenseError(
                    f'a double quote may only open a value, as in KEY="...": near {describe(word)}.', line=line
                )
            close = text.find('"', i + 1)
            if close == -1:
                raise LicenseError(
                    f"the quoted value of {word[:-1]} is never closed: the line seems truncated.", line=line
                )
            value = text[i + 1 : close]
            i = close + 1
            if i < n and text[i] not in " \t":
                raise LicenseError(f"text follows the closing quote of {word[:-1]} without a space.", line=line)
            tokens.append((word[:-1], value))
        elif "=" in word:
            key, _, value = word.partition("=")
            tokens.append((key, value))
        else:
            tokens.append((word, None))
    return tokens


def parse_line(line: int | None, text: str) -> tuple[LicenseLine, bytes]:
    """Parse one logical line (not yet verified): the line and its raw signature."""
    for ch in text:
        if not (" " <= ch <= "~" or ch == "\t"):
            raise LicenseError(
                f"contains the character {ch!r}, which a license line may not hold (ASCII only).", line=line
            )
    tokens = _tokenize(text, line)
    if tokens[0] != ("INCREMENT", None):
        raise LicenseError(
            f"expected an INCREMENT line, found {describe(text)}; the format is {_FORMAT_HINT}.", line=line
        )
    positional = []
    for word, value in tokens[1:5]:
        if value is not None:
            break
        positional.append(word)
    if positional:
        feature_name = positional[0]
        if feature_name not in FEATURES:
            known = ", ".join(FEATURES)
            raise LicenseError(f"unknown feature {describe(feature_name)}; known features are {known}.", line=line)
    if len(positional) < 4:
        raise LicenseError(
            f"the line is incomplete (the file may be truncated): expected {_FORMAT_HINT}, found {describe(text)}.",
            line=line,
        )
    feature_name, version, expiry, count_text = positional
    feature = FEATURES[feature_name]
    tag = f"{feature_name}: "

    keywords: dict[str, str] = {}
    for word, value in tokens[5:]:
        if value is None:
            raise LicenseError(
                f"{tag}unexpected {describe(word)}; after the count only KEY=VALUE fields may follow.", line=line
            )
        if word not in _KEYWORDS:
            raise LicenseError(
                f"{tag}unknown field {word}=; the fields are {', '.join(k + '=' for k in _KEYWORDS)}.", line=line
            )
        if word in keywords:
            raise LicenseError(f"{tag}{word}= appears twice.", line=line)
        keywords[word] = value

    if not VERSION_RE.fullmatch(version):
        raise LicenseError(f"{tag}version {describe(version)} is not a version number such as 7.0.", line=line)

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
            raise LicenseError(
                f"{tag}expiry date {describe(expiry)} is malformed: write a date as YYYY-MM-DD, or permanent.",
                line=line,
            )

    if not _COUNT_RE.fullmatch(count_text) or len(count_text) > MAX_COUNT_DIGITS or int(count_text) < 1:
        raise LicenseError(
            f"{tag}count {describe(count_text)} is not a positive whole number (1 to {10**MAX_COUNT_DIGITS - 1:,}).",
            line=line,
        )
    count = int(count_text)

    if "HOSTID" not in keywords:
        raise LicenseError(f"{tag}HOSTID= is missing (a UDI, or ANY).", line=line)
    host = keywords["HOSTID"]
    if host != ANY_HOST and not UDI_RE.fullmatch(host):
        raise LicenseError(
            f"{tag}HOSTID {describe(host)} is neither ANY nor a UDI such as AIR-MSE-3355-K9:V01:KQ45xx.", line=line
        )
    if host == ANY_HOST and feature.needs_host:
        raise LicenseError(f"{tag}this license must be bound to one appliance's UDI, not HOSTID=ANY.", line=line)

    kind = keywords.get("TYPE", TYPE_STANDARD)
    if kind not in (TYPE_STANDARD, TYPE_EVALUATION):
        raise LicenseError(f"{tag}TYPE {describe(kind)} is neither standard nor evaluation.", line=line)
    is_evaluation = kind == TYPE_EVALUATION
    if is_evaluation and expires_on is None:
        raise LicenseError(f"{tag}an evaluation license must have an expiry date, not permanent.", line=line)

    vendor = keywords.get("VENDOR_STRING")
    if vendor is None:
        raise LicenseError(f'{tag}VENDOR_STRING= is missing (VENDOR_STRING="SKU=...").', line=line)
    if not _VENDOR_RE.fullmatch(vendor) or '"' in vendor or "\\" in vendor:
        raise LicenseError(
            f"{tag}VENDOR_STRING must be 1 to 255 printable characters without quotes or backslashes.", line=line
        )
    items = dict(item.partition("=")[::2] for item in vendor.split(";"))
    sku = items.get("SKU", "")
    if not SKU_RE.fullmatch(sku):
        raise LicenseError(f'{tag}VENDOR_STRING has no valid SKU (write VENDOR_STRING="SKU=...").', line=line)
    if feature.fixed_sku and sku != feature.default_sku:
        raise LicenseError(f"{tag}the SKU must be {feature.default_sku}, not {sku}.", line=line)

    signature_text = keywords.get("SIGN")
    if not signature_text:
        raise LicenseError(f"{tag}the line has no signature (SIGN=...); it cannot be trusted.", line=line)
    signature = b""
    if _B64_RE.fullmatch(signature_text):
        try:
            signature = base64.b64decode(signature_text, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
    if len(signature) != 64:
        raise LicenseError(
            f"{tag}the signature is damaged or truncated: SIGN= must hold 88 base64 characters (an Ed25519 signature).",
            line=line,
        )

    parsed = LicenseLine(
        line_no=line or 0,  # None: a line being issued (sign_line), not read from a file
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
