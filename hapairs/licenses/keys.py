"""The public keys license files are verified with (and the private keys mklicense signs
with). Only :func:`trusted_keys_from_settings` reads Django settings."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings  # read only in trusted_keys_from_settings: the rest needs no Django

from hapairs.licenses.format import DEV_PUBLIC_KEY_B64, LicenseError


# --------------------------------------------------------------------------- keys
def load_public_key(value: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    """A trusted key from a key object, a PEM ``PUBLIC KEY`` block, or the raw 32 bytes in base64."""
    if isinstance(value, Ed25519PublicKey):
        return value
    try:
        text = value.decode("ascii") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise LicenseError(
            "A license public key is not text: give a PEM block or the base64 of the 32-byte key."
        ) from None
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
        raise LicenseError(
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
        raise LicenseError("The key file is not an unencrypted PEM Ed25519 private key.")
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
    if not isinstance(value, Iterable):
        raise LicenseError(
            f"MSEPORTAL_LICENSE_PUBLIC_KEYS must be a string or a list of keys, not {type(value).__name__}."
        )
    return [item for item in value if not (isinstance(item, str) and not item.strip())]


def trusted_keys_from_settings() -> tuple[Ed25519PublicKey, ...]:
    """The public keys license files must be signed with, from Django settings, read now.

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
        except LicenseError as exc:
            raise LicenseError(f"MSEPORTAL_LICENSE_PUBLIC_KEYS entry {number}: {exc.message}") from None
    if not keys:
        if debug:
            return (dev_public_key(),)
        raise LicenseError(
            "No license public key is configured, so no license can be verified: set "
            "MSEPORTAL_LICENSE_PUBLIC_KEYS (make a key pair with `manage.py mklicense --generate-key DIR`). "
            "The development key is trusted only when DEBUG is on."
        )
    if not debug and any(is_dev_key(key) for key in keys):
        raise LicenseError(
            "MSEPORTAL_LICENSE_PUBLIC_KEYS lists the development public key (hapairs/devkeys/), which is "
            "refused when DEBUG is off because its private key is public: remove it and list your own key."
        )
    return tuple(keys)
