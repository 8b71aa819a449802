"""What the HA state machine works with (pure, no I/O): a pair's configuration, what a
heartbeat says about the peer, and the notes (events) every decision returns."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .protocol import (
    DEFAULT_FAILOVER_WAIT,
    MAX_FAILOVER_WAIT,
    MIN_FAILOVER_WAIT,
    EventCode,
    HAState,
    Mode,
    Phase,
    Role,
    StopReason,
    Why,
)

DEFAULT_STABILISATION_SECONDS = 30 * 60


WITNESS_SAFE = "safe"
WITNESS_AVAILABILITY = "availability"
WITNESS_MODES = (WITNESS_SAFE, WITNESS_AVAILABILITY)
DEFAULT_WITNESS_PORT = 8002
MAX_WITNESSES = 7
MIN_WITNESS_PASSWORD = 4  # characters


def check_witness(value: str) -> str:
    """ "IP" or "IP:PORT" (default port 8002) → "IP:PORT"; ValueError with the reason."""
    host, _, port = value.strip().partition(":")
    try:
        ip = ipaddress.IPv4Address(host)
        number = int(port) if port else DEFAULT_WITNESS_PORT
    except ValueError:
        raise ValueError(f'a witness is "IP:PORT", not {value!r}') from None
    if not 1 <= number <= 65535:
        raise ValueError(f"witness {value!r}: port must be 1-65535")
    return f"{ip}:{number}"


class Refused(Exception):
    """A command that is not allowed now; the message is for the operator."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class PairConfig:
    failover_type: Mode = Mode.MANUAL
    failback_type: Mode = Mode.MANUAL
    failover_wait: float = DEFAULT_FAILOVER_WAIT
    stabilisation_seconds: float = DEFAULT_STABILISATION_SECONDS
    # test/bench knob: allow a failover wait below 2 s (never from the API)
    allow_short_wait: bool = False
    # maintenance mode (set from the portal): no automatic failover or failback while an
    # operator works; manual switchover and failback still work
    maintenance: bool = False
    # witnesses ("IP:PORT"): a secondary takes over only when a majority confirm the primary
    # is gone; a primary acknowledges writes without its secondary only under their lease.
    # None: a two-node pair on its own (as before, and a risk the status screen names).
    witnesses: tuple[str, ...] = ()
    witness_password: str = ""
    # "witness unreachable and primary gone": "safe" never takes over a primary that may have
    # acknowledged writes alone (no acknowledged write lost); "availability" takes over anyway
    witness_mode: str = WITNESS_SAFE
    # derived once (every step of every pair reads them); a changed configuration is a new
    # PairConfig. Fields, not cached properties: slots, no per-pair dict (an agent farm has
    # thousands of pairs)
    heartbeat_interval: float = field(init=False, repr=False, compare=False, default=1.0)
    heartbeat_down_after: float = field(init=False, repr=False, compare=False, default=3.0)

    def __post_init__(self) -> None:
        self.failover_type = (
            Mode.parse(self.failover_type) if not isinstance(self.failover_type, Mode) else self.failover_type
        )
        self.failback_type = (
            Mode.parse(self.failback_type) if not isinstance(self.failback_type, Mode) else self.failback_type
        )
        try:
            self.failover_wait = float(self.failover_wait)
            self.stabilisation_seconds = float(self.stabilisation_seconds)
        except (TypeError, ValueError):
            raise ValueError("failover_wait and stabilisation_seconds must be numbers") from None
        lo = 0.2 if self.allow_short_wait else MIN_FAILOVER_WAIT
        if not lo <= self.failover_wait <= MAX_FAILOVER_WAIT:
            raise ValueError(f"Long Failover Wait must be between {MIN_FAILOVER_WAIT} and {MAX_FAILOVER_WAIT} seconds")
        if self.stabilisation_seconds < 0:
            raise ValueError("stabilisation_seconds must be >= 0")
        if not isinstance(self.maintenance, bool):
            raise ValueError("maintenance must be true or false")
        if isinstance(self.witnesses, str) or not all(isinstance(w, str) for w in self.witnesses):
            raise ValueError('witnesses must be a list of "IP:PORT"')
        self.witnesses = tuple(check_witness(w) for w in self.witnesses)
        if len(self.witnesses) > MAX_WITNESSES:
            raise ValueError(f"at most {MAX_WITNESSES} witnesses")
        if self.witnesses and (
            not isinstance(self.witness_password, str) or len(self.witness_password) < MIN_WITNESS_PASSWORD
        ):
            raise ValueError(f"witnesses need a witness_password (at least {MIN_WITNESS_PASSWORD} characters)")
        if self.witness_mode not in WITNESS_MODES:
            raise ValueError(f"witness_mode must be {' or '.join(WITNESS_MODES)}, not {self.witness_mode!r}")
        self.heartbeat_interval = min(1.0, max(0.1, self.failover_wait / 10))
        # heartbeats are shown Down after this long without one (before the wait ends)
        self.heartbeat_down_after = min(self.failover_wait, max(3 * self.heartbeat_interval, 0.5))

    @property
    def majority(self) -> int:
        return len(self.witnesses) // 2 + 1

    @property
    def lease_seconds(self) -> float:
        """A primary's witness lease: well inside the wait, so it fences itself first."""
        return max(0.2, self.failover_wait / 3)

    def changes_to(self, new: PairConfig) -> list[Note]:
        """The "Configuration updated" events of a change from this configuration to ``new``."""
        notes = []
        if new.failover_type is not self.failover_type:
            notes.append(Note(EventCode.CONFIG_UPDATED, f"Failover mode set to {new.failover_type.value.upper()}."))
        if new.failback_type is not self.failback_type:
            notes.append(Note(EventCode.CONFIG_UPDATED, f"Failback mode set to {new.failback_type.value.upper()}."))
        if new.failover_wait != self.failover_wait:
            notes.append(Note(EventCode.CONFIG_UPDATED, f"Failover wait set to {new.failover_wait:g} seconds."))
        if new.stabilisation_seconds != self.stabilisation_seconds:
            notes.append(
                Note(EventCode.CONFIG_UPDATED, f"Stabilisation time set to {new.stabilisation_seconds:g} seconds.")
            )
        if new.maintenance != self.maintenance:
            paused = (
                "on: automatic failover and failback paused"
                if new.maintenance
                else "off: automatic failover and failback resumed"
            )
            notes.append(Note(EventCode.CONFIG_UPDATED, f"Maintenance mode {paused}."))
        return notes

    def to_dict(self) -> dict:
        return {
            "failover_type": self.failover_type.value,
            "failback_type": self.failback_type.value,
            "failover_wait": self.failover_wait,
            "stabilisation_seconds": self.stabilisation_seconds,
            "allow_short_wait": self.allow_short_wait,
            "maintenance": self.maintenance,
            "witnesses": list(self.witnesses),
            "witness_password": self.witness_password,
            "witness_mode": self.witness_mode,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PairConfig:
        keys = (
            "failover_type",
            "failback_type",
            "failover_wait",
            "stabilisation_seconds",
            "allow_short_wait",
            "maintenance",
            "witnesses",
            "witness_password",
            "witness_mode",
        )
        return cls(**{k: d[k] for k in keys if k in d})


@dataclass
class Note:
    """One event to record: its stable code, and remarks for the operator."""

    code: EventCode
    remarks: str = ""
    why: Why | None = None  # set on the agents' own decisions

    @property
    def description(self) -> str:
        return self.code.text


@dataclass
class PeerView:
    """What a heartbeat tells about the peer's side of the pair. Never changed once made: one
    received is shared by the datagrams that repeat it (make another with dataclasses.replace)."""

    state: HAState
    generation: int
    owner: Role
    in_charge: bool
    running: bool
    graceful: bool
    phase: Phase | None = None
    synced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "generation": self.generation,
            "owner": self.owner.value,
            "in_charge": self.in_charge,
            "running": self.running,
            "graceful": self.graceful,
            "phase": self.phase.value if self.phase else None,
            "synced": self.synced,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PeerView:
        return cls(
            state=HAState(d["state"]),
            generation=int(d["generation"]),
            owner=Role(d["owner"]),
            in_charge=bool(d["in_charge"]),
            running=bool(d["running"]),
            graceful=bool(d["graceful"]),
            phase=Phase(d["phase"]) if d.get("phase") else None,
            synced=bool(d.get("synced", False)),
        )


# ---------------------------------------------------------------- a pair's state in ha.json
def pair_to_saved(ha: Any) -> dict[str, Any]:
    """A ``PairHA`` as ha.json keeps it (plain JSON values)."""
    # shallow (asdict deep-copies every field: a third of a save's time); the values are plain
    d = {f.name: getattr(ha, f.name) for f in dataclasses.fields(ha)}
    d["role"] = ha.role.value
    d["owner"] = ha.owner.value
    d["config"] = ha.config.to_dict()
    d["peer_state"] = ha.peer_state.value if ha.peer_state else None
    d["transitions"] = [[t, s.value] for t, s in ha.transitions]
    d["state"] = ha.state.value  # informative ("Last shutdown state")
    d.pop("quiet", None)  # run-time only
    return d


def pair_fields_from_saved(saved: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The ``PairHA`` fields (``names``) from what ha.json kept; unknown keys are dropped."""
    d = dict(saved)
    d.pop("state", None)
    d["role"] = Role(d["role"])
    d["owner"] = Role(d["owner"])
    d["config"] = PairConfig.from_dict(d["config"])
    d["peer_state"] = HAState(d["peer_state"]) if d.get("peer_state") else None
    d["phase"] = Phase(d["phase"]) if d.get("phase") else None
    d["stop_reason"] = StopReason(d["stop_reason"]) if d.get("stop_reason") else None
    d["transitions"] = [(t, HAState(s)) for t, s in d.get("transitions", [])]
    return {k: v for k, v in d.items() if k in names}
