"""Hypothesis stateful tests: no sequence of events leaves two nodes in charge of one VIP.

The model drives two PairHA objects the way the runtime does (heartbeat exchanges, the
failover and failback procedures, kills with restart from the persisted state, stops and
starts by hand, manual commands, changes of failover/failback type, time passing).

* Crash-only world (a node is either up and reachable or dead; loopback has no partitions):
  at every step at most one live node is in charge.
* With partitions too (a live peer may be unreachable): never two nodes in charge at the
  same generation, and as soon as the two exchange a heartbeat, at most one is in charge.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nodeagent.hastate import PairConfig, PairHA, Refused
from nodeagent.protocol import HAState, Mode, Role

WAIT = 3.0
STEP = 0.3  # heartbeat interval for WAIT = 3


class PairModel(RuleBasedStateMachine):
    partitions = False

    def __init__(self):
        super().__init__()
        self.now = 0.0
        cfg = lambda: PairConfig(Mode.AUTOMATIC, Mode.AUTOMATIC, WAIT, 5.0)  # noqa: E731
        p, _ = PairHA.create(Role.PRIMARY, cfg(), 0.0)
        s, _ = PairHA.create(Role.SECONDARY, cfg(), 0.0)
        self.nodes = {"p": p, "s": s}
        self.alive = {"p": True, "s": True}
        self.saved = {k: v.to_dict() for k, v in self.nodes.items()}
        self.connected = True

    # ---------------------------------------------------------------- helpers
    def persist(self, k):
        self.saved[k] = self.nodes[k].to_dict()

    def reachable(self):
        return self.alive["p"] and self.alive["s"] and self.connected

    def exchange(self, sender):
        other = "s" if sender == "p" else "p"
        a, b = self.nodes[sender], self.nodes[other]
        b.on_heartbeat(self.now, a.view())
        a.on_heartbeat(self.now, b.view())
        self.persist(sender)
        self.persist(other)
        # right after an exchange the two agree on who is in charge
        assert not (a.in_charge and b.in_charge), (a.to_dict(), b.to_dict())

    def in_charge(self):
        return [k for k in self.nodes if self.alive[k] and self.nodes[k].in_charge]

    # ---------------------------------------------------------------- rules
    @rule(ticks=st.integers(1, 15), sender=st.sampled_from(["p", "s"]))
    def time_passes(self, ticks, sender):
        for _ in range(ticks):
            self.now += STEP
            if self.reachable():
                self.exchange(sender)
            for k in self.nodes:
                if self.alive[k]:
                    self.nodes[k].tick(self.now)
                    self.persist(k)
            self.run_procedures()

    @rule(sender=st.sampled_from(["p", "s"]))
    def heartbeat(self, sender):
        if self.reachable():
            self.exchange(sender)

    def run_procedures(self):
        """What the runtime does when a node is in a transitional state."""
        p, s = self.nodes["p"], self.nodes["s"]
        if self.alive["s"] and s.state is HAState.FAILOVER_INVOKED:
            if self.reachable():
                p.peer_failover_begin(self.now, s.pending_generation)
                self.persist("p")
            s.complete_failover(self.now)
            self.persist("s")
        if self.alive["p"] and p.phase == "failover":
            p.failover_shutdown_done(self.now)
            self.persist("p")
        if self.alive["s"] and s.state is HAState.FAILBACK_ACTIVE:
            try:
                if not self.reachable():
                    raise Refused("primary unreachable")
                p.peer_failback_begin(self.now, s.generation)
                self.persist("p")
            except Refused as e:
                s.failback_abort(self.now, str(e))
            else:
                s.failback_handover(self.now)
                self.persist("s")
                if self.reachable():
                    p.peer_failback_take_charge(self.now, s.generation)
                    self.persist("p")
            self.persist("s")
        if self.reachable() and p.phase == "resync":
            p.resync_done(self.now)
            s.resync_done(self.now)
            self.persist("p")
            self.persist("s")
        # catch-up replication: a secondary behind an in-charge primary syncs up
        if (
            self.reachable()
            and p.in_charge
            and p.phase is None
            and s.owner is Role.PRIMARY
            and not s.synced
            and s.running
        ):
            s.set_synced(self.now, True)
            self.persist("s")

    @rule(k=st.sampled_from(["p", "s"]))
    def kill(self, k):
        self.alive[k] = False  # SIGKILL: the VIP listener dies with the process

    @rule(k=st.sampled_from(["p", "s"]))
    def restart(self, k):
        if self.alive[k]:
            return
        node = PairHA.from_dict(self.saved[k])
        node.restarted(self.now)
        self.nodes[k] = node
        self.alive[k] = True
        self.persist(k)

    @rule(k=st.sampled_from(["p", "s"]), stop=st.booleans())
    def stop_or_start(self, k, stop):
        if not self.alive[k]:
            return
        n = self.nodes[k]
        (n.stop_services if stop else n.start_services)(self.now)
        self.persist(k)

    @rule(k=st.sampled_from(["p", "s"]), failback=st.booleans())
    def operator_command(self, k, failback):
        # the runtime forwards both commands to the secondary
        if not self.alive["s"] or (k == "p" and not self.reachable()):
            return
        s = self.nodes["s"]
        try:
            (s.invoke_failback if failback else s.invoke_failover)(self.now)
        except Refused:
            return
        self.persist("s")
        self.run_procedures()

    @rule(fo=st.sampled_from(list(Mode)), fb=st.sampled_from(list(Mode)))
    def reconfigure(self, fo, fb):
        for k in self.nodes:
            if self.alive[k]:
                self.nodes[k].update_config(self.now, PairConfig(fo, fb, WAIT, 5.0))
                self.persist(k)

    # ---------------------------------------------------------------- invariants
    @invariant()
    def one_generation_one_owner(self):
        live = [self.nodes[k] for k in self.in_charge()]
        assert len({n.generation for n in live}) == len(live), [n.to_dict() for n in live]

    @invariant()
    def at_most_one_in_charge_without_partitions(self):
        if not self.partitions:
            assert len(self.in_charge()) <= 1, {k: self.nodes[k].to_dict() for k in self.nodes}

    @invariant()
    def in_charge_matches_state(self):
        for k in self.in_charge():
            n = self.nodes[k]
            assert n.running and n.owner is n.role
            assert n.state in (
                HAState.PRIMARY_ACTIVE,
                HAState.FAILOVER_ACTIVE,
                HAState.FAILBACK_ACTIVE,
                HAState.FAILBACK_COMPLETE,
            ), n.state


class CrashOnly(PairModel):
    partitions = False


class WithPartitions(PairModel):
    partitions = True

    @rule()
    def toggle_partition(self):
        self.connected = not self.connected


SETTINGS = settings(
    max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestCrashOnly = CrashOnly.TestCase
TestCrashOnly.settings = SETTINGS
TestWithPartitions = WithPartitions.TestCase
TestWithPartitions.settings = SETTINGS


def test_the_model_can_reach_a_failover_and_a_failback():
    """The invariant is not vacuous: the model does take the VIP over and give it back."""
    m = CrashOnly()
    m.time_passes(ticks=2, sender="p")
    m.kill("p")
    m.time_passes(ticks=15, sender="s")
    assert m.in_charge() == ["s"] and m.nodes["s"].state is HAState.FAILOVER_ACTIVE
    m.restart("p")
    m.time_passes(ticks=2, sender="p")
    assert m.nodes["p"].state is HAState.TERMINATED
    m.time_passes(ticks=15, sender="p")  # stabilisation 5 s, automatic failback
    assert m.in_charge() == ["p"] and m.nodes["p"].state is HAState.PRIMARY_ACTIVE
    assert m.nodes["s"].state is HAState.SECONDARY_ACTIVE
