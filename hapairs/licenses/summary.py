"""The license summary of one appliance (Service, Platform Limit, Type, Installed Limit),
the installed counts and whether a virtual appliance is activated."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from hapairs.licenses.format import ACTIVATION_FEATURE, FEATURES, PLATFORM_LIMITS, SERVICES


# --------------------------------------------------------------------------- summary
class LicenseLike(Protocol):
    """A verified LicenseLine or a stored hapairs.models.License row."""

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
    """One row of the license summary (Service, Platform Limit, Type, Installed Limit)."""

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


def _summary_type(license: LicenseLike, today: date) -> str:
    if license.expires_on is None:
        return SUMMARY_PERMANENT
    if license.expires_on < today:
        return SUMMARY_EXPIRED
    return SUMMARY_EVALUATION if license.is_evaluation else SUMMARY_TERM


def license_summary(device_type: str, licenses: Iterable[LicenseLike], today: date) -> list[SummaryRow]:
    """The license summary of one appliance: per service, per feature and type, summed counts.

    Permanent licenses of a feature add up into one row; evaluation and term licenses are
    grouped by expiry date and show the days left; expired ones show as Expired and stop
    counting. A service with no license gets one Not installed row. Activation licenses
    are not a service: see is_activated().
    """
    if device_type not in PLATFORM_LIMITS:
        raise ValueError(f"unknown device type {device_type!r}; known: {', '.join(PLATFORM_LIMITS)}")
    limits = PLATFORM_LIMITS[device_type]
    feature_order = {name: index for index, name in enumerate(FEATURES)}
    totals: dict[tuple[str, str, str, date | None], int] = {}
    for license in licenses:
        feature = FEATURES.get(license.feature)
        if feature is None or feature.service is None:
            continue
        kind = _summary_type(license, today)
        key = (feature.service, license.feature, kind, license.expires_on)
        totals[key] = totals.get(key, 0) + license.count
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


def installed_counts(licenses: Iterable[LicenseLike], today: date) -> dict[str, int]:
    """Per feature, the count of licenses that have not expired on ``today``."""
    counts: dict[str, int] = {}
    for license in licenses:
        if license.expires_on is None or license.expires_on >= today:
            counts[license.feature] = counts.get(license.feature, 0) + license.count
    return counts


def is_activated(licenses: Iterable[LicenseLike], today: date) -> bool:
    """Whether an unexpired MSE_ACTIVATION license is among ``licenses`` (those installed on one VA)."""
    return installed_counts(licenses, today).get(ACTIVATION_FEATURE, 0) > 0
