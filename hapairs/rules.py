"""The rules a pairing must satisfy (MSE-HA-SPEC §2), as plain Python.

No ORM, no I/O: the services hand in plain facts and get back every violation, each
with the form field it belongs next to and a sentence an operator understands. The
tables below are written to read like the seed's; they are parsed once at import.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nodeagent import haconfig, protocol

# ---------------------------------------------------------------------------------
# The tables, as in the guide. Rows: primary. Columns: secondary. Y: supported.
# MSE-3365 pairs only with another MSE-3365 (its own row and column).
PAIRING_MATRIX_TABLE = """
primary \\ secondary   3310  3350  3355  VA-Low  VA-Standard  VA-High  3365
3310                    Y     Y     Y     N       N            N        N
3350                    N     Y     Y     N       N            N        N
3355                    N     Y     Y     N       N            N        N
VA-Low                  N     N     N     Y       Y            Y        N
VA-Standard             N     N     N     N       Y            Y        N
VA-High                 N     N     N     N       N            Y        N
3365                    N     N     N     N       N            N        Y
"""

# One secondary backing two primaries at once: the combinations the guide allows.
# Anything not listed (any VA, a 3310 or 3365 secondary, two 3355) is not supported.
N_TO_1_TABLE = {
    "3310": [],
    "3350": [("3310", "3310")],
    "3355": [("3310", "3310"), ("3350", "3350"), ("3310", "3350")],
}

MAX_PRIMARIES_PER_SECONDARY = 2
FAILOVER_WAIT_RANGE = (protocol.MIN_FAILOVER_WAIT, protocol.MAX_FAILOVER_WAIT)  # the wire's range
ACTIVATION_SKU = "L-MSE-7.0-K9"
VIRTUAL_TYPES = frozenset({"VA-Low", "VA-Standard", "VA-High"})
DEVICE_LABELS = {
    "3310": "MSE-3310",
    "3350": "MSE-3350",
    "3355": "MSE-3355",
    "3365": "MSE-3365",
    "VA-Low": "MSE VA-Low",
    "VA-Standard": "MSE VA-Standard",
    "VA-High": "MSE VA-High",
}


def _parse_matrix(table: str) -> dict[tuple[str, str], bool]:
    lines = [line.split() for line in table.strip().splitlines()]
    header = lines[0][3:]  # drop "primary \ secondary"
    matrix: dict[tuple[str, str], bool] = {}
    for row in lines[1:]:
        primary, cells = row[0], row[1:]
        if len(cells) != len(header):
            raise ValueError(f"pairing matrix row {primary} has {len(cells)} cells for {len(header)} columns")
        for secondary, cell in zip(header, cells, strict=True):
            matrix[(primary, secondary)] = cell == "Y"
    return matrix


PAIRING_MATRIX: dict[tuple[str, str], bool] = _parse_matrix(PAIRING_MATRIX_TABLE)
DEVICE_TYPES: tuple[str, ...] = tuple(dict.fromkeys(primary for primary, _ in PAIRING_MATRIX))


# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeFacts:
    """What the rules need to know about one appliance."""

    name: str
    device_type: str
    version: str
    hm_ip: str
    vip: str | None = None
    vip_prefixlen: int | None = None
    activated: bool = False  # holds a valid activation license (matters for VAs only)
    role: str = "none"  # "primary", "secondary" or "none", as set-up left it

    @property
    def label(self) -> str:
        return DEVICE_LABELS.get(self.device_type, self.device_type)

    @property
    def is_virtual(self) -> bool:
        return self.device_type in VIRTUAL_TYPES


@dataclass(frozen=True)
class Violation:
    """One broken rule: the form field it belongs next to, and what to tell the operator."""

    field: str
    message: str
    rule: str


# the rules that depend on the pairs a secondary backs now: a pairing they refuse may pass
# once those change (a conflict with the state, not a bad request)
STATE_RULES = frozenset({"capacity", "va_one_to_one", "n_to_1"})


@dataclass
class PairingError(Exception):
    """Raised by ``check_pairing`` with every violation found."""

    violations: list[Violation] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join(v.message for v in self.violations)

    def by_field(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for violation in self.violations:
            grouped.setdefault(violation.field, []).append(violation.message)
        return grouped


# Form fields the violations point at (the Configure High Availability Parameters form).
F_SECONDARY = "secondary_name"
F_SECONDARY_IP = "secondary_ip"
F_LICENSE = "license_file"
F_FAILOVER_WAIT = "failover_wait"
F_PRIMARY = "__all__"
F_WITNESSES = "witnesses"
F_WITNESS_PASSWORD = "witness_password"
F_WITNESS_MODE = "witness_mode"


def _an(label: str) -> str:
    return f"an {label}" if label[:1] in "AEIOUM" else f"a {label}"


# ---------------------------------------------------------------------------------
def matrix_violation(primary_type: str, secondary_type: str) -> str | None:
    """Why a secondary of this type cannot back a primary of that type, or None."""
    for device_type in (primary_type, secondary_type):
        if device_type not in DEVICE_LABELS:
            return f"{device_type!r} is not a known device type."
    if PAIRING_MATRIX[(primary_type, secondary_type)]:
        return None
    p, s = DEVICE_LABELS[primary_type], DEVICE_LABELS[secondary_type]
    if "3365" in (primary_type, secondary_type):
        return f"{s} cannot back up {_an(p)}: an MSE-3365 pairs only with another MSE-3365."
    if (primary_type in VIRTUAL_TYPES) != (secondary_type in VIRTUAL_TYPES):
        return (
            f"{s} cannot back up {_an(p)}: physical appliances pair only with physical ones, "
            "and virtual appliances only with virtual ones."
        )
    return f"{s} cannot back up {_an(p)}: the secondary must be of equal or higher specification."


def n_to_1_violation(secondary_type: str, primary_types: Sequence[str]) -> str | None:
    """Why one secondary cannot back these primaries together, or None (1:1 is always fine here)."""
    if len(primary_types) <= 1:
        return None
    s = DEVICE_LABELS.get(secondary_type, secondary_type)
    if len(primary_types) > MAX_PRIMARIES_PER_SECONDARY:
        return f"A secondary can back at most {MAX_PRIMARIES_PER_SECONDARY} primaries."
    if secondary_type in VIRTUAL_TYPES or any(t in VIRTUAL_TYPES for t in primary_types):
        return "A virtual appliance supports 1:1 only: it cannot take part in an N:1 pairing."
    allowed = N_TO_1_TABLE.get(secondary_type, [])
    wanted = Counter(primary_types)
    if any(Counter(combo) == wanted for combo in allowed):
        return None
    if not allowed:
        return f"{_an(s)[0].upper()}{_an(s)[1:]} secondary backs one primary only: N:1 is not supported on it."
    options = ", or ".join(_describe_combo(combo) for combo in allowed)
    got = _describe_combo(tuple(primary_types))
    return f"{_an(s)[0].upper()}{_an(s)[1:]} secondary cannot back {got} at once: it may back {options}."


def _describe_combo(combo: tuple[str, ...]) -> str:
    labels = [DEVICE_LABELS.get(t, t) for t in combo]
    if len(set(labels)) == 1:
        return f"two {labels[0]}"
    return " and ".join(f"one {label}" for label in labels)


def address_violations(primary: NodeFacts, secondary: NodeFacts) -> list[Violation]:
    """Layer-2 only: the VIP differs from, and shares a subnet with, both Health Monitor IPs."""
    if not primary.vip or primary.vip_prefixlen is None:
        return [
            Violation(
                F_PRIMARY,
                f"The primary {primary.name} has no virtual IP: run set-up on it with a VIP and netmask first.",
                "vip_required",
            )
        ]
    try:
        network = ipaddress.IPv4Network(f"{primary.vip}/{primary.vip_prefixlen}", strict=False)
        vip = ipaddress.IPv4Address(primary.vip)
    except ValueError:
        return [
            Violation(
                F_PRIMARY, f"The primary's VIP {primary.vip}/{primary.vip_prefixlen} is not valid.", "vip_invalid"
            )
        ]
    violations = []
    for node, fieldname in ((primary, F_PRIMARY), (secondary, F_SECONDARY_IP)):
        try:
            hm_ip = ipaddress.IPv4Address(node.hm_ip)
        except ValueError:
            violations.append(Violation(fieldname, f"{node.hm_ip!r} is not an IPv4 address.", "hm_ip_invalid"))
            continue
        if hm_ip == vip:
            violations.append(
                Violation(
                    fieldname,
                    f"The Health Monitor IP of {node.name} and the VIP are both {vip}: they must be different.",
                    "hm_ip_equals_vip",
                )
            )
        elif hm_ip not in network:
            violations.append(
                Violation(
                    fieldname,
                    f"The Health Monitor IP {hm_ip} of {node.name} is not in the VIP's subnet {network}: "
                    "only Layer-2 redundancy is supported (Layer-3 is not).",
                    "same_subnet",
                )
            )
    return violations


def distinct_violation(primary_name: str, primary_ip: str, secondary_name: str, secondary_ip: str) -> Violation | None:
    """A server cannot back itself, by name or by Health Monitor IP."""
    if primary_name == secondary_name or primary_ip == secondary_ip:
        return Violation(F_SECONDARY, f"{primary_name} cannot be its own secondary.", "distinct")
    return None


def validate_pairing(
    primary: NodeFacts,
    secondary: NodeFacts,
    *,
    already_backed: Iterable[NodeFacts] = (),
    failover_wait: int = 10,
) -> list[Violation]:
    """Every rule of spec §2 that pairing ``primary`` with ``secondary`` would break.

    ``already_backed`` are the primaries the secondary backs today (not counting
    ``primary`` itself, so re-validating an existing pair's parameters works).
    """
    others = [node for node in already_backed if node.name != primary.name]
    violations: list[Violation] = []

    same = distinct_violation(primary.name, primary.hm_ip, secondary.name, secondary.hm_ip)
    if same is not None:
        return [same]

    if primary.role == "secondary":
        violations.append(
            Violation(F_PRIMARY, f"{primary.name} is set up as a secondary; it cannot be a primary.", "roles")
        )
    if secondary.role == "primary":
        violations.append(
            Violation(
                F_SECONDARY,
                f"{secondary.name} is set up as a primary: re-run set-up on it as a secondary (role 2) first.",
                "roles",
            )
        )

    violations.extend(address_violations(primary, secondary))

    if primary.version != secondary.version:
        violations.append(
            Violation(
                F_SECONDARY,
                f"The primary runs {primary.version} but the secondary runs {secondary.version}: "
                "both must run the same software version.",
                "same_version",
            )
        )

    matrix_message = matrix_violation(primary.device_type, secondary.device_type)
    if matrix_message:
        violations.append(Violation(F_SECONDARY, matrix_message, "pairing_matrix"))

    if len(others) >= MAX_PRIMARIES_PER_SECONDARY:
        names = " and ".join(node.name for node in others)
        violations.append(
            Violation(
                F_SECONDARY,
                f"{secondary.name} already backs two primaries ({names}); a secondary can back at most two.",
                "capacity",
            )
        )
    elif others and (primary.is_virtual or secondary.is_virtual):
        violations.append(
            Violation(
                F_SECONDARY,
                f"A virtual appliance supports 1:1 only: {secondary.name} already backs {others[0].name}.",
                "va_one_to_one",
            )
        )
    elif others and not matrix_message:
        n1_message = n_to_1_violation(secondary.device_type, [node.device_type for node in (*others, primary)])
        if n1_message:
            violations.append(
                Violation(F_SECONDARY, f"{n1_message} ({secondary.name} already backs {others[0].name}.)", "n_to_1")
            )

    for node, fieldname in ((secondary, F_LICENSE), (primary, F_PRIMARY)):
        if node.is_virtual and not node.activated:
            where = (
                "upload its activation license under Activate Secondary with License"
                if node is secondary
                else "upload its activation license on the Licenses page first"
            )
            violations.append(
                Violation(
                    fieldname,
                    f"The virtual appliance {node.name} is not activated: {where} ({ACTIVATION_SKU}).",
                    "va_activation",
                )
            )

    low, high = FAILOVER_WAIT_RANGE
    if not low <= failover_wait <= high:
        violations.append(
            Violation(
                F_FAILOVER_WAIT,
                f"Long Failover Wait must be between {low} and {high} seconds, not {failover_wait}.",
                "failover_wait",
            )
        )
    return violations


def check_pairing(primary: NodeFacts, secondary: NodeFacts, **kwargs) -> None:
    """Raise ``PairingError`` listing every violation, or return if the pairing is allowed."""
    violations = validate_pairing(primary, secondary, **kwargs)
    if violations:
        raise PairingError(violations)


# ---------------------------------------------------------------------------------
# Witnesses (the agents' own limits, from nodeagent.haconfig: the agents refuse the rest)
MAX_WITNESSES = haconfig.MAX_WITNESSES
MIN_WITNESS_PASSWORD = haconfig.MIN_WITNESS_PASSWORD
DEFAULT_WITNESS_PORT = haconfig.DEFAULT_WITNESS_PORT
WITNESS_MODES = haconfig.WITNESS_MODES


def split_witnesses(text: str) -> list[str]:
    """The form's one text field: addresses separated by commas or whitespace."""
    return [part for part in re.split(r"[\s,]+", text) if part]


def witness_violations(
    witnesses: Sequence[str],
    *,
    node_addresses: Mapping[str, str],
    password: str = "",
    password_stored: bool = False,
    mode: str = haconfig.WITNESS_SAFE,
) -> tuple[list[str], list[Violation]]:
    """The witnesses a pair is given, as "IP:PORT" (port 8002 if left out), and every rule
    they break. ``node_addresses`` maps each address of the pair itself (both Health Monitor
    IPs, the VIP) to what it is: a witness there would fall with the node it should judge.
    ``password``: a new witness password, or empty to keep ``password_stored``."""
    violations: list[Violation] = []
    addresses: list[str] = []
    for raw in witnesses:
        try:
            address = haconfig.check_witness(raw)
        except ValueError as exc:
            violations.append(Violation(F_WITNESSES, f"{str(exc)[:1].upper()}{str(exc)[1:]}.", "witness_address"))
            continue
        ip = address.partition(":")[0]
        if ip in node_addresses:
            violations.append(
                Violation(
                    F_WITNESSES,
                    f"Witness {address} is on {node_addresses[ip]}: a witness must run on a third host, "
                    "never on a node of the pair it judges.",
                    "witness_on_node",
                )
            )
        elif address in addresses:
            violations.append(Violation(F_WITNESSES, f"Witness {address} is listed twice.", "witness_duplicate"))
        else:
            addresses.append(address)
    if len(witnesses) > MAX_WITNESSES:
        violations.append(
            Violation(
                F_WITNESSES,
                f"At most {MAX_WITNESSES} witnesses, not {len(witnesses)} (what the agents accept).",
                "witness_count",
            )
        )
    if password and len(password) < MIN_WITNESS_PASSWORD:
        violations.append(
            Violation(
                F_WITNESS_PASSWORD,
                f"The witness password must be at least {MIN_WITNESS_PASSWORD} characters.",
                "witness_password",
            )
        )
    elif witnesses and not password and not password_stored:
        violations.append(
            Violation(
                F_WITNESS_PASSWORD,
                "Enter the witness password (the --password each witness runs with): the nodes sign "
                "their requests to the witnesses with it.",
                "witness_password",
            )
        )
    if mode not in WITNESS_MODES:
        violations.append(
            Violation(F_WITNESS_MODE, f"{mode!r} is neither {' nor '.join(WITNESS_MODES)}.", "witness_mode")
        )
    return addresses, violations
