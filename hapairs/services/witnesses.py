"""A pair's witnesses, as the portal configures them: checked by ``rules.witness_violations``,
the password encrypted at rest (``HAPair.set_witness_password``) and never shown back.

``services.pairs`` asks these when it records a pair (``ha_configure``) and when it changes
one (``ha_update``); the configure screen's live check asks the same ``witness_check``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hapairs import rules
from hapairs.models import Appliance, HAPair
from hapairs.services._common import ServiceError

WITNESS_FIELDS = ["witness_addresses", "witness_password_ciphertext", "witness_mode"]


def pair_addresses(primary: Appliance, secondary_name: str, secondary_ip: str) -> dict[str, str]:
    """The pair's own addresses (no witness may run there), each with what it is."""
    addresses = {
        primary.hm_ip: f"{primary.name}'s Health Monitor IP",
        secondary_ip: f"{secondary_name}'s Health Monitor IP",
    }
    if primary.vip:
        addresses[primary.vip] = f"the pair's virtual IP ({primary.name}'s VIP)"
    return addresses


def witness_check(
    *,
    primary: Appliance,
    secondary_name: str,
    secondary_ip: str,
    witnesses: Sequence[str],
    password: str,
    mode: str,
    password_stored: bool = False,
) -> tuple[list[str], dict[str, list[str]]]:
    """The witnesses as "IP:PORT", and every refusal under the form field it belongs to."""
    addresses, violations = rules.witness_violations(
        witnesses,
        node_addresses=pair_addresses(primary, secondary_name, secondary_ip),
        password=password,
        password_stored=password_stored,
        mode=mode,
    )
    return addresses, rules.PairingError(violations).by_field()


def refusal(errors: dict[str, list[str]]) -> ServiceError:
    return ServiceError(" ".join(m for ms in errors.values() for m in ms), field=next(iter(errors)), errors=errors)


def witness_remarks(addresses: Sequence[str], mode: str) -> str:
    if not addresses:
        return "no witnesses"
    return f"witnesses {', '.join(addresses)} ({mode})"


@dataclass(frozen=True)
class WitnessChange:
    """What an update does to a pair's witnesses; ``remarks`` empty: nothing."""

    addresses: list[str]
    password: str  # the new one; empty: keep the stored one (cleared with the last witness)
    mode: str
    remarks: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.remarks)


def witness_change(
    *, pair: HAPair, witnesses: Sequence[str] | None, password: str = "", mode: str | None = None
) -> WitnessChange:
    """Check a change of ``pair``'s witnesses (``None``: keep what it has); ServiceError with
    every refusal by field."""
    current = list(pair.witness_addresses)
    wanted_mode = pair.witness_mode if mode is None else mode
    addresses, errors = witness_check(
        primary=pair.primary,
        secondary_name=pair.secondary.name,
        secondary_ip=pair.secondary.hm_ip,
        witnesses=current if witnesses is None else witnesses,
        password=password,
        mode=wanted_mode,
        password_stored=pair.has_witness_password,
    )
    if errors:
        raise refusal(errors)
    remarks = []
    if addresses != current:
        remarks.append(f"Witnesses set to {', '.join(addresses)}." if addresses else "Witnesses removed.")
    if wanted_mode != pair.witness_mode:
        remarks.append(f"Witness mode set to {wanted_mode}.")
    if addresses and password and (not pair.has_witness_password or password != pair.get_witness_password()):
        remarks.append("Witness password changed.")
    return WitnessChange(addresses, password, wanted_mode, remarks)


def witness_set(pair: HAPair, *, addresses: Sequence[str], password: str, mode: str) -> None:
    """Put checked witnesses on ``pair`` (not saved): a new password is encrypted, an empty one
    keeps the stored one, and a pair left without witnesses keeps no password."""
    pair.witness_addresses = list(addresses)
    pair.witness_mode = mode
    if not addresses:
        pair.set_witness_password("")
    elif password:
        pair.set_witness_password(password)
