"""The HA state machine of one node for one HA pair (MSE-HA-SPEC §5). Pure: no I/O.

A node holds one :class:`PairHA` per pair it belongs to (a primary has one, a secondary
backing two primaries has two). Time is passed in (``now``, seconds). Every method returns
the events (:class:`Note`) to record; the runtime reads ``in_charge`` afterwards and binds or
releases the VIP accordingly (level-triggered), and reads ``state``/``phase`` to know which
procedure to run (copy data, tell the peer, ...).

Who is in charge is decided by the **generation** (fencing epoch): at each generation exactly
one role owns the VIP (``owner``). Only the secondary creates generations (failover done,
failback hand-over), the primary adopts them, so two generations never share a number with
different owners. A node that hears of a newer generation than its own adopts it and, if it
was in charge while the owner is now the other role, steps down at once.

The displayed state is derived (``state``), from:
  running/stop_reason  services up, or stopped by hand ("graceful") or for a failover;
  phase                None | "failover" | "failback" | "resync" (transitional states);
  in_charge / owner    who holds the VIP;
  heartbeat_up, peer_graceful.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .haconfig import (
    DEFAULT_STABILISATION_SECONDS,
    Note,
    PairConfig,
    PeerView,
    Refused,
    iso,
    pair_fields_from_saved,
    pair_to_saved,
)
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
    explain,
)


def _on(paths: Sequence[str]) -> str:
    """The paths a silence was on, for a sentence: both of them, the one, or nothing (unknown)."""
    if not paths:
        return ""
    return f" on both paths ({', '.join(paths)})" if len(paths) == 2 else f" on the {paths[0]} path"


# re-exported: tests and the runtime import PairConfig, PeerView, Note and the wait range from here
__all__ = ["DEFAULT_FAILOVER_WAIT", "DEFAULT_STABILISATION_SECONDS", "MAX_FAILOVER_WAIT", "MIN_FAILOVER_WAIT"]  # fmt: skip
__all__ += ["Note", "PairConfig", "PairHA", "PeerView", "Refused", "iso"]


@dataclass
class PairHA:
    role: Role
    config: PairConfig
    generation: int = 1
    owner: Role = Role.PRIMARY
    in_charge: bool = False
    running: bool = True
    stop_reason: StopReason | None = None  # while not running: stopped by hand, or by a failover
    phase: Phase | None = None
    heartbeat_up: bool = False
    heartbeats_seen: bool = False
    last_heard: float | None = None
    last_alive: float | None = None  # the peer answered (any answer) though not a heartbeat
    peer_graceful: bool = False
    peer_running: bool = False
    peer_state: HAState | None = None
    synced: bool = False  # secondary: holds every acknowledged write of the primary
    alone: bool = False  # in charge while heartbeats were down (persisted hint for restart)
    reclaim_pending: bool = False  # was in charge before a restart; waits for the peer's word
    resume_in_charge: bool = False  # was in charge when stopped by hand
    last_switch_at: float | None = None  # end of the last failover/failback (stabilisation guard)
    pending_generation: int | None = None  # secondary during a failover: the generation it will own
    created_at: float = 0.0
    transitions: list = field(default_factory=list)  # [(now, state)] most recent last, bounded
    takeover_confirmed_until: float = 0.0  # a witness majority confirmed the primary gone (until then)
    takeover_confirmed_by: str = ""  # how many of them: the takeover's explanation says so
    failback_held_until: float | None = None  # the stabilisation window an automatic failback waits out (shown once)
    # seconds of missed heartbeats, counted by the runtime on the receiver's own clock while it
    # runs (a stall of this node counts one interval at most: hysteresis). None (the pure
    # tests): the silence is now - last_heard. Not persisted.
    quiet: float | None = None

    # ------------------------------------------------------------ construction
    @classmethod
    def create(cls, role: Role, config: PairConfig, now: float) -> tuple[PairHA, list[Note]]:
        p = cls(role=role, config=config, created_at=now, last_heard=now)
        if role is Role.PRIMARY:
            p.in_charge = True
        p._record(now)
        return p, [Note(EventCode.CONFIG_CREATED)]

    def restore_behind_secondary(self, now: float, generation: int) -> None:
        """Recovery mode (spec §3): a primary that lost its configuration gets it back from
        the manager while the secondary is in charge of ``generation``. It comes back
        running but not in charge (TERMINATED), like a primary restarted after a failover;
        a failback copies the data back. Never in charge here, so never a second VIP owner."""
        if self.role is not Role.PRIMARY:
            raise Refused("Only a primary is restored in recovery mode.")
        self.generation = max(self.generation, generation)
        self.owner = Role.SECONDARY
        self.in_charge = False
        self.running = True
        self.stop_reason = None
        self.resume_in_charge = False
        self.reclaim_pending = False
        self.phase = None
        self._record(now)

    # ------------------------------------------------------------ derived
    @property
    def state(self) -> HAState:
        if not self.running:
            return HAState.FAILOVER_ACTIVE if self.stop_reason is StopReason.FAILOVER else HAState.GRACEFUL_SHUTDOWN
        if self.phase == Phase.FAILOVER:
            return HAState.FAILOVER_INVOKED
        if self.phase == Phase.FAILBACK:
            return HAState.FAILBACK_ACTIVE
        if self.phase == Phase.RESYNC:
            return HAState.FAILBACK_COMPLETE if self.role is Role.PRIMARY else HAState.SECONDARY_ALONE
        if self.in_charge:
            return HAState.PRIMARY_ACTIVE if self.role is Role.PRIMARY else HAState.FAILOVER_ACTIVE
        if self.peer_graceful:
            return HAState.GRACEFUL_SHUTDOWN
        if self.role is Role.SECONDARY and self.owner is Role.PRIMARY and not self.reclaim_pending:
            return HAState.SECONDARY_ACTIVE if self.heartbeat_up else HAState.TERMINATED
        return HAState.TERMINATED

    def allowed_switch_at(self) -> float | None:
        if self.last_switch_at is None:
            return None
        return self.last_switch_at + self.config.stabilisation_seconds

    def view(self) -> PeerView:
        return PeerView(
            state=self.state,
            generation=self.generation,
            owner=self.owner,
            in_charge=self.in_charge,
            running=self.running,
            graceful=self.stop_reason == StopReason.GRACEFUL,
            phase=self.phase,
            synced=self.synced,
        )

    def _record(self, now: float) -> None:
        s = self.state
        if not self.transitions or self.transitions[-1][1] != s:
            self.transitions.append((now, s))
            del self.transitions[:-50]

    def _done(self, now: float, notes: list[Note]) -> list[Note]:
        self._record(now)
        return notes

    # ------------------------------------------------------------ heartbeats and time
    def on_heartbeat(self, now: float, peer: PeerView) -> list[Note]:
        """A heartbeat exchange with the peer succeeded (we sent and got an answer, or answered)."""
        notes: list[Note] = []
        # fencing first: a newer generation always wins, even while stopped
        if peer.generation > self.generation:
            mine = self.generation
            self.generation = peer.generation
            self.owner = peer.owner
            self.reclaim_pending = False
            self.resume_in_charge = self.resume_in_charge and self.owner is self.role
            if self.in_charge and self.owner is not self.role:
                self.in_charge = False
                self.phase = None
                reason = explain(
                    "fence.newer_generation",
                    f"Stepped down: the peer holds generation {peer.generation}, newer than this node's "
                    f"{mine}, owned by the {self.owner.value}; one owner per generation.",
                    own_generation=mine, peer_generation=peer.generation, owner=self.owner.value,
                )  # fmt: skip
                notes.append(
                    Note(
                        EventCode.STEPPED_DOWN,
                        f"Generation {peer.generation} is owned by the {self.owner.value}.",
                        why=reason,
                    )
                )
            if self.role is Role.SECONDARY and self.owner is Role.PRIMARY and self.phase is None:
                self.synced = False  # must catch up with the primary that is now in charge
        elif peer.generation == self.generation and peer.in_charge and self.in_charge:
            # cannot happen (one owner per generation); be safe: the secondary yields
            if self.role is Role.SECONDARY:
                self.in_charge = False
                reason = explain(
                    "fence.both_in_charge",
                    f"Stepped down: both nodes were in charge of generation {self.generation}; the secondary yields.",
                    generation=self.generation,
                )
                notes.append(
                    Note(EventCode.STEPPED_DOWN, "Both nodes were in charge; the secondary yields.", why=reason)
                )
        if not self.running:
            return self._done(now, notes)
        self.last_heard = now
        if self.quiet is not None:
            self.quiet = 0.0
        self.peer_state = peer.state
        self.peer_running = peer.running
        was_up = self.heartbeat_up
        self.heartbeat_up = peer.running
        if peer.graceful != self.peer_graceful:
            self.peer_graceful = peer.graceful
            if peer.graceful:
                notes.append(Note(EventCode.PEER_GRACEFUL))
        if self.heartbeat_up and not self.heartbeats_seen:
            self.heartbeats_seen = True
            notes.append(Note(EventCode.HEARTBEATS_SETUP))
        elif self.heartbeat_up and not was_up:
            notes.append(Note(EventCode.HEARTBEATS_RESTORED))
        if self.heartbeat_up:
            self.alone = False
        # a restarted node that was in charge takes charge again only when the peer says
        # it has not taken over (same generation, not in charge, not failing over)
        if self.reclaim_pending and peer.running:
            if peer.generation <= self.generation and not peer.in_charge and peer.phase is None:
                if self.owner is self.role:
                    self.in_charge = True
                self.reclaim_pending = False
        # the peer abandoned a failback: leave the transitional state
        if self.phase == Phase.FAILBACK and self.role is Role.PRIMARY and peer.phase != Phase.FAILBACK and peer.running:
            self.phase = None
        if (
            self.phase == Phase.RESYNC
            and self.role is Role.SECONDARY
            and peer.phase is None
            and peer.in_charge
            and self.synced
        ):
            self.phase = None
        return self._done(now, notes)

    def tick(self, now: float, paths: Callable[[], Sequence[str]] = tuple) -> list[Note]:
        """Time passes: heartbeat timeouts and automatic failover / failback decisions, each
        with its explanation (``paths()``: the names of the pair's heartbeat paths, asked
        only when a decision is explained: this runs every step of every pair)."""
        notes: list[Note] = []
        if not self.running:
            return notes
        since_hb = self._silence(now)
        if self.heartbeat_up and since_hb > self.config.heartbeat_down_after:
            self.heartbeat_up = False
            self.peer_running = False
            down_after, names = self.config.heartbeat_down_after, paths()
            reason = explain(
                "heartbeat.down",
                f"Heartbeats down: none answered for {since_hb:.1f} s{_on(names)} (down after {down_after:g} s).",
                silence_s=since_hb, down_after_s=down_after, paths=",".join(names) or None,
            )  # fmt: skip
            notes.append(Note(EventCode.HEARTBEATS_LOST, why=reason))
        if not self.heartbeat_up and self.in_charge:
            self.alone = True
        if self.automatic_takeover_due(now) and (
            not self.config.witnesses or now < self.takeover_confirmed_until
        ):  # with witnesses, only once a majority of them confirm the primary is gone
            witnessed = " A majority of witnesses confirmed it." if self.config.witnesses else ""
            notes += self._begin_failover(
                now, f"Automatic failover: no heartbeat for {self.config.failover_wait:g} seconds.{witnessed}"
            )
            notes[-1].why = self._takeover_why(now, paths())
        elif (
            self.role is Role.SECONDARY
            and self.in_charge
            and self.phase is None
            and self.config.failback_type is Mode.AUTOMATIC
            and not self.config.maintenance
            and self.heartbeat_up
            and self.peer_running
            and self.peer_state is HAState.TERMINATED
        ):
            at = self.allowed_switch_at()
            if at is None or at <= now:
                notes += self._begin_failback(now, "Automatic failback.")
                notes[-1].why = explain(
                    "failback.automatic",
                    "Automatic failback: the primary is back and waiting (Terminated), heartbeats are up"
                    + ("" if at is None else f" and the stabilisation window ended at {iso(at)}")
                    + ".",
                    peer_state=HAState.TERMINATED.value,
                    stabilisation_s=self.config.stabilisation_seconds,
                )
            elif self.failback_held_until != at:  # once per window, not once a tick
                self.failback_held_until = at
                mins = (at - now) / 60
                notes.append(
                    Note(
                        EventCode.FAILBACK_HELD,
                        f"The automatic failback waits until {iso(at)}.",
                        why=explain(
                            "failback.stabilisation",
                            f"Failback refused: stabilisation window, {mins:.0f} min left "
                            f"({self.config.stabilisation_seconds / 60:g} min after a switch).",
                            left_s=at - now,
                            stabilisation_s=self.config.stabilisation_seconds,
                            allowed_at=iso(at),
                        ),  # fmt: skip
                    )
                )
        return self._done(now, notes)

    def _takeover_why(self, now: float, paths: Sequence[str]) -> Why:
        since = self._silence(now)
        if self.last_alive is not None:
            since = min(since, now - self.last_alive)
        wait, witnesses = self.config.failover_wait, self.config.witnesses
        confirmed = f"; {self.takeover_confirmed_by}" if witnesses and self.takeover_confirmed_by else ""
        return explain(
            "takeover.silence",
            f"Takeover after {since:.1f} s without heartbeats{_on(paths)}; the wait is {wait:g} s{confirmed}.",
            silence_s=since, failover_wait_s=wait, paths=",".join(paths) or None,
            witnesses=len(witnesses), witness_majority=self.config.majority if witnesses else None,
            witnesses_confirmed=self.takeover_confirmed_by or None,
        )  # fmt: skip

    def automatic_takeover_due(self, now: float) -> bool:
        """Secondary: every condition of an automatic failover holds (but the witnesses')."""
        since = self._silence(now)
        # a peer process that answers at all (e.g. "not paired" during a deletion) is alive:
        # never take its VIP over
        if self.last_alive is not None:
            since = min(since, now - self.last_alive)
        return (
            self.running
            and self.role is Role.SECONDARY
            and not self.in_charge
            and self.owner is Role.PRIMARY
            and self.phase in (None, Phase.RESYNC)
            and not self.reclaim_pending
            and self.config.failover_type is Mode.AUTOMATIC
            and not self.config.maintenance
            and not self.peer_graceful
            and self.synced
            and since >= self.config.failover_wait
        )

    def _silence(self, now: float) -> float:
        """Seconds of missed heartbeats."""
        if self.quiet is not None:
            return self.quiet
        return now - (self.last_heard if self.last_heard is not None else self.created_at)

    def peer_alive(self, now: float) -> None:
        """The peer's agent answered something other than a heartbeat (it is not dead)."""
        self.last_alive = now

    # ------------------------------------------------------------ failover
    def _guard(self, now: float, what: str, after: str) -> None:
        at = self.allowed_switch_at()
        if at is not None and now < at:
            mins = self.config.stabilisation_seconds / 60
            raise Refused(
                f"{what} is not allowed until {iso(at)}: the database needs {mins:g} minutes to stabilise after a {after}."
            )

    def _begin_failover(self, now: float, remarks: str) -> list[Note]:
        self.phase = Phase.FAILOVER
        self.pending_generation = self.generation + 1
        return [Note(EventCode.FAILOVER_SHUTTING_DOWN_PRIMARY, remarks)]

    def invoke_failover(self, now: float) -> list[Note]:
        """Manual switchover, on the secondary (the runtime forwards it there)."""
        if self.role is not Role.SECONDARY:
            raise Refused("A failover is carried out by the secondary server.")
        if not self.running:
            raise Refused("The secondary's services are stopped; start them first.")
        if self.phase is not None:
            raise Refused(f"A {self.phase} is already in progress.")
        if self.in_charge or self.owner is not Role.PRIMARY or self.reclaim_pending:
            raise Refused("The secondary is already in charge; a failover is not possible.")
        if not self.synced:
            raise Refused("The secondary is not synchronized with the primary yet; a failover would lose data.")
        self._guard(now, "Failover", "failback")
        return self._done(now, self._begin_failover(now, "Switchover invoked by the manager."))

    def complete_failover(self, now: float) -> list[Note]:
        """Secondary: the primary has released the VIP (or is gone); take charge."""
        if self.phase != Phase.FAILOVER or self.role is not Role.SECONDARY:
            raise Refused("No failover in progress.")
        self.generation = max(self.generation + 1, self.pending_generation or 0)
        self.pending_generation = None
        self.owner = Role.SECONDARY
        self.in_charge = True
        self.phase = None
        self.last_switch_at = now
        self.alone = not self.heartbeat_up
        return self._done(
            now,
            [
                Note(EventCode.FAILOVER_RECONFIGURING_DB),
                Note(EventCode.FAILOVER_STARTING_INSTANCE),
                Note(EventCode.FAILOVER_ACTIVE, f"Generation {self.generation}."),
            ],
        )

    def peer_failover_begin(self, now: float, generation: int) -> list[Note]:
        """Primary: the secondary starts a failover that will own ``generation``."""
        if self.role is not Role.PRIMARY:
            raise Refused("Only a primary can be failed over.")
        if generation <= self.generation and self.owner is Role.SECONDARY:
            return []  # already done (repeat)
        self.in_charge = False
        self.reclaim_pending = False
        self.phase = Phase.FAILOVER
        self.pending_generation = generation
        return self._done(now, [Note(EventCode.FAILOVER_SHUTTING_DOWN_PRIMARY)])

    def failover_shutdown_done(self, now: float) -> list[Note]:
        """Primary: services stopped for the failover (simulates a primary failure). The
        generation is the one the secondary announced (only a secondary creates generations,
        also when this request arrives late, after a heartbeat already told the new one)."""
        gen = max(self.pending_generation or self.generation, self.generation)
        self.generation = gen
        self.pending_generation = None
        self.owner = Role.SECONDARY
        self.in_charge = False
        self.phase = None
        self.running = False
        self.stop_reason = StopReason.FAILOVER
        self.resume_in_charge = False
        self.last_switch_at = now
        return self._done(now, [])

    # ------------------------------------------------------------ failback
    def _begin_failback(self, now: float, remarks: str) -> list[Note]:
        self.phase = Phase.FAILBACK
        return [Note(EventCode.FAILBACK_IN_PROGRESS, remarks)]

    def invoke_failback(self, now: float) -> list[Note]:
        """Failback, on the secondary (coordinator; the runtime forwards it there)."""
        if self.role is not Role.SECONDARY:
            raise Refused("A failback is carried out by the secondary server.")
        if self.phase is not None:
            raise Refused(f"A {self.phase} is already in progress.")
        if not self.in_charge:
            raise Refused("The secondary is not in charge; there is nothing to fail back.")
        if not (self.heartbeat_up and self.peer_running):
            raise Refused("The primary must be up (state TERMINATED) before a failback.")
        self._guard(now, "Failback", "failover")
        return self._done(now, self._begin_failback(now, "Failback invoked by the manager."))

    def peer_failback_begin(self, now: float, generation: int) -> list[Note]:
        if self.role is not Role.PRIMARY:
            raise Refused("Only a primary can be failed back to.")
        if generation < self.generation:
            raise Refused("Stale failback request (older generation).")
        if self.in_charge:
            return []
        if not self.running:
            raise Refused("The primary's services are stopped; start them first.")
        self.phase = Phase.FAILBACK
        return self._done(now, [Note(EventCode.FAILBACK_IN_PROGRESS)])

    def failover_abort(self, now: float, reason: str) -> list[Note]:
        """Secondary: a takeover the witnesses would not confirm (the primary did not answer,
        and may only be cut off): back to standing by, nothing changed."""
        if self.phase != Phase.FAILOVER or self.role is not Role.SECONDARY:
            return []
        self.phase = None
        self.pending_generation = None
        return self._done(now, [Note(EventCode.TAKEOVER_REFUSED, reason)])

    def failback_abort(self, now: float, reason: str) -> list[Note]:
        if self.phase != Phase.FAILBACK:
            return []
        self.phase = None
        return self._done(now, [Note(EventCode.FAILBACK_ABORTED, reason)])

    def failback_handover(self, now: float) -> list[Note]:
        """Secondary: data copied back; give the VIP up and hand the pair to the primary."""
        if self.phase != Phase.FAILBACK or self.role is not Role.SECONDARY:
            raise Refused("No failback in progress.")
        self.in_charge = False
        self.generation += 1
        self.owner = Role.PRIMARY
        self.phase = Phase.RESYNC
        self.synced = True  # it was the source of the copy
        self.last_switch_at = now
        return self._done(now, [Note(EventCode.FAILBACK_COMPLETE, f"Generation {self.generation}.")])

    def peer_failback_take_charge(self, now: float, generation: int) -> list[Note]:
        """Primary: the secondary handed the pair over at ``generation``."""
        if self.role is not Role.PRIMARY:
            raise Refused("Only a primary takes charge after a failback.")
        if generation < self.generation or (generation == self.generation and self.in_charge):
            return []
        self.generation = generation
        self.owner = Role.PRIMARY
        self.in_charge = True
        self.reclaim_pending = False
        self.phase = Phase.RESYNC
        self.last_switch_at = now
        return self._done(now, [Note(EventCode.FAILBACK_COMPLETE), Note(EventCode.NOT_SYNCHRONIZED)])

    def resync_done(self, now: float) -> list[Note]:
        if self.phase != Phase.RESYNC:
            return []
        self.phase = None
        if self.role is Role.SECONDARY:
            self.synced = True
        return self._done(now, [Note(EventCode.ACTIVE)])

    # ------------------------------------------------------------ sync (secondary)
    def set_synced(self, now: float, synced: bool) -> list[Note]:
        if self.role is Role.SECONDARY:
            self.synced = synced
        return self._done(now, [])

    # ------------------------------------------------------------ stop / start / restart
    def stop_services(self, now: float) -> list[Note]:
        """Stopped by hand: deliberate downtime, the peer must not take over."""
        if not self.running:
            return []
        self.resume_in_charge = self.in_charge or self.reclaim_pending
        self.in_charge = False
        self.reclaim_pending = False
        self.phase = None
        self.running = False
        self.stop_reason = StopReason.GRACEFUL
        self.heartbeat_up = False
        return self._done(now, [Note(EventCode.SERVICES_STOPPED)])

    def start_services(self, now: float) -> list[Note]:
        if self.running:
            return []
        self.running = True
        self.stop_reason = None
        self.last_heard = now
        self.created_at = now
        self._resume(now, self.resume_in_charge)
        self.resume_in_charge = False
        return self._done(now, [Note(EventCode.SERVICES_STARTED)])

    def restarted(self, now: float) -> list[Note]:
        """The process restarted from its persisted state (it may have been killed)."""
        was_in_charge = self.in_charge or self.reclaim_pending
        self.in_charge = False
        self.heartbeat_up = False
        self.peer_running = False
        self.last_heard = now
        self.created_at = now
        if self.phase == Phase.FAILOVER and self.role is Role.PRIMARY:
            self.phase = None  # the secondary finishes it; we will hear the new generation
        if self.phase == Phase.FAILBACK:
            self.phase = None
        if self.running:
            self._resume(now, was_in_charge)
        else:
            self.resume_in_charge = self.resume_in_charge or was_in_charge
        return self._done(now, [])

    def _resume(self, now: float, was_in_charge: bool) -> None:
        if self.role is Role.SECONDARY and not (was_in_charge and self.owner is Role.SECONDARY):
            self.synced = False  # may have missed writes while down
        if was_in_charge and self.owner is self.role:
            if self.alone:
                self.in_charge = True  # the peer was already gone: nobody can have taken over
            else:
                self.reclaim_pending = True

    # ------------------------------------------------------------ configuration
    def update_config(self, now: float, new: PairConfig) -> list[Note]:
        notes = self.config.changes_to(new)
        self.config = new
        return self._done(now, notes)

    # ------------------------------------------------------------ persistence (haconfig)
    def to_dict(self) -> dict:
        return pair_to_saved(self)

    @classmethod
    def from_dict(cls, d: dict) -> PairHA:
        return cls(**pair_fields_from_saved(d, {f.name for f in dataclasses.fields(cls)}))
