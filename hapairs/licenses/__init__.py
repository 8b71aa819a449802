"""License files: parse, verify, summarise and issue them (docs/licenses.md), as plain Python.

No ORM and no I/O: callers hand in the file's bytes, the trusted public keys and today's
date, and get back a :class:`VerifiedLicenseFile` or one :class:`LicenseError` carrying a
sentence an operator understands. Only :func:`trusted_keys_from_settings` reads Django
settings, so the node agent could use this package without Django.

A file holds one ``INCREMENT`` line per feature, FlexLM-style::

    INCREMENT CAS_ELEMENTS 7.0 permanent 100 HOSTID=ANY VENDOR_STRING="SKU=L-CAS-ELEMENTS" SIGN=<base64>

Each line is signed with Ed25519 over its canonical form (:func:`canonical_form`), which
lists every field in a fixed order, so changing any field breaks the signature.

This package is the one entry point (``from hapairs import licenses``); its modules are
``format`` (constants, tables, results, the canonical form), ``keys``, ``parser``,
``verify``, ``summary`` and ``issue`` (what mklicense signs).
"""

from hapairs.licenses.format import (
    ACTIVATION_FEATURE,
    ACTIVATION_SKU,
    ANY_HOST,
    DEV_PUBLIC_KEY_B64,
    EVALUATION_DAYS,
    FEATURES,
    MAX_BYTES,
    PERMANENT,
    PLATFORM_LIMITS,
    PLATFORM_LIMITS_TABLE,
    SERVICES,
    SIGNATURE_CONTEXT,
    TYPE_EVALUATION,
    TYPE_STANDARD,
    Feature,
    LicenseError,
    LicenseLine,
    VerifiedLicenseFile,
    canonical_form,
)
from hapairs.licenses.issue import LicenseSpec, check_spec, render_license_file, sign_line
from hapairs.licenses.keys import (
    dev_public_key,
    is_dev_key,
    load_private_key,
    load_public_key,
    public_key_b64,
    trusted_keys_from_settings,
)
from hapairs.licenses.parser import check_size
from hapairs.licenses.summary import (
    SUMMARY_EVALUATION,
    SUMMARY_EXPIRED,
    SUMMARY_NONE,
    SUMMARY_PERMANENT,
    SUMMARY_TERM,
    LicenseLike,
    SummaryRow,
    installed_counts,
    is_activated,
    license_summary,
)
from hapairs.licenses.verify import check_host, parse_and_verify

__all__ = [
    "ACTIVATION_FEATURE",
    "ACTIVATION_SKU",
    "ANY_HOST",
    "DEV_PUBLIC_KEY_B64",
    "EVALUATION_DAYS",
    "FEATURES",
    "MAX_BYTES",
    "PERMANENT",
    "PLATFORM_LIMITS",
    "PLATFORM_LIMITS_TABLE",
    "SERVICES",
    "SIGNATURE_CONTEXT",
    "SUMMARY_EVALUATION",
    "SUMMARY_EXPIRED",
    "SUMMARY_NONE",
    "SUMMARY_PERMANENT",
    "SUMMARY_TERM",
    "TYPE_EVALUATION",
    "TYPE_STANDARD",
    "Feature",
    "LicenseError",
    "LicenseLike",
    "LicenseLine",
    "LicenseSpec",
    "SummaryRow",
    "VerifiedLicenseFile",
    "canonical_form",
    "check_host",
    "check_size",
    "check_spec",
    "dev_public_key",
    "installed_counts",
    "is_activated",
    "is_dev_key",
    "license_summary",
    "load_private_key",
    "load_public_key",
    "parse_and_verify",
    "public_key_b64",
    "render_license_file",
    "sign_line",
    "trusted_keys_from_settings",
]
