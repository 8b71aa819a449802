"""The pure HA state machine (nodeagent.hastate): walk-through of MSE-HA-SPEC §5 and its rules."""

import pytest

from nodeagent.hastate import PairConfig, PairHA, Refused
from nodeagent.protocol import EventCode as T
from nodeagent.protocol import HAState as S
from nodeagent.protocol import Mode, Role

W = 10.0


def pair(failover=Mode.MANUAL, failback=Mode.MANUAL, wait=W, stab=1800):
    cfg = PairConfig(failover, failback, wait, stab)
    p, notes_p = PairHA.create(Role.PRIMARY, cfg, 0.0)
    s, notes_s = PairHA.create(Role.SECONDARY, PairConfig(failover, failback, wait, stab), 0.0)
    assert [n.code for n in notes_p] == [T.CONFIG_CREATED]
    return p, s


def exchange(a, b, now):
    """One heartbeat: a sends, b answers with its view."""
    na = b.on_heartbeat(now, a.view())
    nb = a.on_heartbeat(now, b.view())
    return [n.code for n in na + nb]


def synced_pair(**kw):
    p, s = pair(**kw)
    notes = exchange(p, s, 0.5)
    assert notes.count(T.HEARTBEATS_SETUP) == 2
    s.set_synced(0.5, True)
    return p, s


def states(p, s):
    return (p.state, s.state)


def test_paired_and_healthy():
    p, s = synced_pair()
    assert states(p, s) == (S.PRIMARY_ACTIVE, S.SECONDARY_ACTIVE)
    assert p.in_charge and not s.in_charge
    assert p.heartbeat_up and s.heartbeat_up
    assert p.generation == s.generation == 1


def test_section5_walkthrough_in_order():
    p, s = synced_pair(stab=1800)
    t = 1.0
    # 2. switchover invoked from the manager: both FAILOVER_INVOKED
    notes = s.invoke_failover(t)
    assert [n.code for n in notes] == [T.FAILOVER_SHUTTING_DOWN_PRIMARY]
    p.peer_failover_begin(t, s.pending_generation)
    assert states(p, s) == (S.FAILOVER_INVOKED, S.FAILOVER_INVOKED)
    assert not p.in_charge and not s.in_charge
    # 3. failover done: primary stopped (last shutdown state FAILOVER_ACTIVE), secondary in charge
    p.failover_shutdown_done(t)
    notes = s.complete_failover(t)
    assert [n.code for n in notes] == [T.FAILOVER_RECONFIGURING_DB, T.FAILOVER_STARTING_INSTANCE, T.FAILOVER_ACTIVE]
    assert states(p, s) == (S.FAILOVER_ACTIVE, S.FAILOVER_ACTIVE)
    assert s.in_charge and not p.in_charge and not p.running
    assert s.generation == p.generation == 2 and s.owner is Role.SECONDARY
    # 4. primary brought back up: TERMINATED; secondary still FAILOVER_ACTIVE
    p.start_services(t + 5)
    exchange(p, s, t + 5)
    assert states(p, s) == (S.TERMINATED, S.FAILOVER_ACTIVE)
    assert not p.in_charge
    # failback right after the failover is refused, with the ISO time it will be allowed
    with pytest.raises(Refused, match=r"not allowed until 1970-01-01T00:30:01\+00:00"):
        s.invoke_failback(t + 6)
    # 5. failback invoked after 30 minutes: both FAILBACK_ACTIVE
    t = 1.0 + 1800
    exchange(p, s, t)
    notes = s.invoke_failback(t)
    assert [n.code for n in notes] == [T.FAILBACK_IN_PROGRESS]
    p.peer_failback_begin(t, s.generation)
    assert states(p, s) == (S.FAILBACK_ACTIVE, S.FAILBACK_ACTIVE)
    assert s.in_charge  # serves (read-only) while the data is copied back
    # 6. FAILBACK_COMPLETE / SECONDARY_ALONE
    s.failback_handover(t + 1)
    assert not s.in_charge and not p.in_charge
    notes = p.peer_failback_take_charge(t + 1, s.generation)
    assert T.NOT_SYNCHRONIZED in [n.code for n in notes]
    assert states(p, s) == (S.FAILBACK_COMPLETE, S.SECONDARY_ALONE)
    assert p.in_charge and p.generation == s.generation == 3
    exchange(p, s, t + 1.5)
    assert states(p, s) == (S.FAILBACK_COMPLETE, S.SECONDARY_ALONE)
    # 7. sync done
    p.resync_done(t + 2)
    s.resync_done(t + 2)
    assert states(p, s) == (S.PRIMARY_ACTIVE, S.SECONDARY_ACTIVE)
    assert [st for _, st in p.transitions] == [
        S.PRIMARY_ACTIVE,
        S.FAILOVER_INVOKED,
        S.FAILOVER_ACTIVE,
        S.TERMINATED,
        S.FAILBACK_ACTIVE,
        S.FAILBACK_COMPLETE,
        S.PRIMARY_ACTIVE,
    ]
    assert [st for _, st in s.transitions] == [
        S.TERMINATED,
        S.SECONDARY_ACTIVE,
        S.FAILOVER_INVOKED,
        S.FAILOVER_ACTIVE,
        S.FAILBACK_ACTIVE,
        S.SECONDARY_ALONE,
        S.SECONDARY_ACTIVE,
    ]


def test_failover_right_after_failback_is_refused():
    p, s = synced_pair(stab=60)
    s.invoke_failover(1)
    p.peer_failover_begin(1, 2)
    p.failover_shutdown_done(1)
    s.complete_failover(1)
    p.start_services(2)
    exchange(p, s, 61)
    s.invoke_failback(61)
    s.failback_handover(62)
    p.peer_failback_take_charge(62, s.generation)
    p.resync_done(63)
    s.resync_done(63)
    with pytest.raises(Refused, match="Failover is not allowed until 1970-01-01T00:02:02"):
        s.invoke_failover(100)
    exchange(p, s, 122)
    s.invoke_failover(122)


@pytest.mark.parametrize("wait", [2, 10, 120])
def test_automatic_failover_after_exactly_the_wait(wait):
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=wait)
    # primary dies right after the last heartbeat at 0.5
    assert s.tick(0.5 + wait - 0.01) == [] or s.state is not S.FAILOVER_INVOKED
    assert s.state is S.TERMINATED  # HA link down
    notes = s.tick(0.5 + wait)
    assert s.state is S.FAILOVER_INVOKED
    assert notes[-1].code == T.FAILOVER_SHUTTING_DOWN_PRIMARY
    s.complete_failover(0.5 + wait)
    assert s.state is S.FAILOVER_ACTIVE and s.in_charge and s.generation == 2


def test_heartbeats_keep_the_secondary_from_taking_over():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=3)
    for i in range(1, 100):
        exchange(p, s, 0.5 + i * 0.3)
        s.tick(0.5 + i * 0.3)
        p.tick(0.5 + i * 0.3)
    assert states(p, s) == (S.PRIMARY_ACTIVE, S.SECONDARY_ACTIVE)


def test_manual_failover_type_never_takes_over_by_itself():
    p, s = synced_pair(failover=Mode.MANUAL)
    s.tick(10_000)
    assert s.state is S.TERMINATED and not s.in_charge


def test_maintenance_pauses_the_automatic_failover_and_its_end_resumes_it():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=W)
    on = PairConfig(Mode.AUTOMATIC, Mode.MANUAL, W, 1800, maintenance=True)
    notes = s.update_config(0.5, on)
    assert [n.remarks for n in notes] == ["Maintenance mode on: automatic failover and failback paused."]
    notes = s.tick(0.5 + 10 * W)  # the primary is gone: heartbeats lost, and nobody takes over
    assert [n.code for n in notes] == [T.HEARTBEATS_LOST] and not s.in_charge and s.state is S.TERMINATED
    assert PairHA.from_dict(s.to_dict()).config.maintenance is True  # persisted
    off = PairConfig(Mode.AUTOMATIC, Mode.MANUAL, W, 1800)
    s.update_config(0.5 + 10 * W, off)
    s.tick(0.5 + 10 * W + 0.01)
    assert s.state is S.FAILOVER_INVOKED


def test_maintenance_must_be_a_boolean():
    with pytest.raises(ValueError, match="maintenance must be true or false"):
        PairConfig(Mode.AUTOMATIC, Mode.MANUAL, W, 1800, maintenance="yes")


def test_wait_bounds():
    for bad in (1.9, 121, "x"):
        with pytest.raises(ValueError):
            PairConfig(Mode.MANUAL, Mode.MANUAL, bad)
    PairConfig(Mode.MANUAL, Mode.MANUAL, 2)
    PairConfig(Mode.MANUAL, Mode.MANUAL, 120)


def test_unsynchronised_secondary_does_not_take_over_or_switch():
    p, s = pair(failover=Mode.AUTOMATIC)
    exchange(p, s, 0.5)
    s.tick(100)
    assert not s.in_charge and s.state is S.TERMINATED
    with pytest.raises(Refused, match="not synchronized"):
        s.invoke_failover(100)


def test_graceful_stop_of_primary_is_not_a_failure():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=3)
    p.stop_services(1)
    assert p.state is S.GRACEFUL_SHUTDOWN and not p.in_charge
    exchange(p, s, 1)  # the stopped node still answers heartbeats: running False, graceful
    assert s.state is S.GRACEFUL_SHUTDOWN
    s.tick(100)
    assert not s.in_charge and s.state is S.GRACEFUL_SHUTDOWN
    p.start_services(101)
    assert p.state is S.TERMINATED  # waits for the peer's word before taking the VIP
    exchange(p, s, 101)
    assert states(p, s) == (S.PRIMARY_ACTIVE, S.SECONDARY_ACTIVE)
    assert p.generation == 1


def test_restarted_primary_after_automatic_failover_is_terminated():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=3)
    saved = p.to_dict()  # SIGKILL: the process is gone, the saved state remains
    s.tick(3.5)
    s.complete_failover(3.5)
    p = PairHA.from_dict(saved)
    p.restarted(5)
    assert not p.in_charge and p.state is S.TERMINATED
    exchange(p, s, 5)
    assert not p.in_charge and p.generation == 2 and p.owner is Role.SECONDARY
    assert states(p, s) == (S.TERMINATED, S.FAILOVER_ACTIVE)


def test_quick_restart_of_primary_reclaims_the_vip_after_hearing_the_peer():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=3)
    saved = p.to_dict()
    p = PairHA.from_dict(saved)
    p.restarted(1)
    assert not p.in_charge
    exchange(p, s, 1)
    assert p.in_charge and p.state is S.PRIMARY_ACTIVE


def test_primary_alone_restarts_in_charge():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=3)
    p.tick(5)  # secondary gone
    assert p.in_charge and not p.heartbeat_up and p.alone
    p2 = PairHA.from_dict(p.to_dict())
    p2.restarted(6)
    assert p2.in_charge


def test_newer_generation_makes_the_old_owner_step_down():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=3)
    # a partition: the secondary takes over while the primary still runs
    s.tick(4)
    s.complete_failover(4)
    assert p.in_charge and s.in_charge and p.generation < s.generation
    notes = exchange(p, s, 5)
    assert T.STEPPED_DOWN in notes
    assert not p.in_charge and s.in_charge
    assert p.state is S.TERMINATED


def test_automatic_failback_waits_for_the_stabilisation_time():
    p, s = synced_pair(failover=Mode.AUTOMATIC, failback=Mode.AUTOMATIC, wait=3, stab=60)
    s.tick(4)
    s.complete_failover(4)
    p = PairHA.from_dict(p.to_dict())
    p.restarted(5)
    exchange(p, s, 5)
    s.tick(30)
    assert s.state is S.FAILOVER_ACTIVE
    exchange(p, s, 64)
    s.tick(64)
    assert s.state is S.FAILBACK_ACTIVE


def test_config_update_remarks():
    p, s = synced_pair()
    notes = p.update_config(1, PairConfig(Mode.AUTOMATIC, Mode.MANUAL, 10))
    assert [(n.code, n.remarks) for n in notes] == [(T.CONFIG_UPDATED, "Failover mode set to AUTOMATIC.")]


def test_persistence_round_trip():
    p, s = synced_pair()
    s.invoke_failover(1)
    s2 = PairHA.from_dict(s.to_dict())
    assert s2.to_dict() == s.to_dict()
    assert s2.state is S.FAILOVER_INVOKED


def test_refusals():
    p, s = synced_pair()
    with pytest.raises(Refused):
        p.invoke_failover(1)
    with pytest.raises(Refused):
        s.invoke_failback(1)
    s.invoke_failover(1)
    with pytest.raises(Refused, match="already in progress"):
        s.invoke_failover(1)


def test_a_peer_that_answers_without_a_heartbeat_is_not_taken_over():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=3)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        s.peer_alive(t)  # e.g. the primary answers 404 "not paired" while the pair is deleted
        s.tick(t)
    assert not s.in_charge and not s.heartbeat_up
    s.tick(8.1)  # silence for the whole wait: now it is dead
    assert s.state is S.FAILOVER_INVOKED


# ------------------------------------------------------------ explained decisions
def test_an_automatic_takeover_says_which_rule_fired_and_on_what():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=10)
    lost = s.tick(4.0, lambda: ["hm", "direct"])
    assert [n.code for n in lost] == [T.HEARTBEATS_LOST]
    assert lost[0].why["rule"] == "heartbeat.down"
    assert lost[0].why["inputs"]["silence_s"] == 3.5 and lost[0].why["inputs"]["paths"] == "hm,direct"
    notes = s.tick(10.6, lambda: ["hm", "direct"])
    why = notes[-1].why
    assert notes[-1].code == T.FAILOVER_SHUTTING_DOWN_PRIMARY and why["rule"] == "takeover.silence"
    assert why["text"] == "Takeover after 10.1 s without heartbeats on both paths (hm, direct); the wait is 10 s."
    assert why["inputs"] == {
        "silence_s": 10.1, "failover_wait_s": 10.0, "paths": "hm,direct", "witnesses": 0,
        "witness_majority": None, "witnesses_confirmed": None,
    }  # fmt: skip


def test_a_failback_held_by_the_stabilisation_window_is_said_once_then_done_with_its_reason():
    p, s = synced_pair(failover=Mode.AUTOMATIC, failback=Mode.AUTOMATIC, wait=3, stab=900)
    s.tick(4)
    s.complete_failover(4)
    p = PairHA.from_dict(p.to_dict())
    p.restarted(5)
    exchange(p, s, 5)
    exchange(p, s, 180)
    held = s.tick(180)
    assert [n.code for n in held] == [T.FAILBACK_HELD]
    assert held[0].why["rule"] == "failback.stabilisation"
    assert held[0].why["text"].startswith("Failback refused: stabilisation window, 12 min left")
    assert held[0].why["inputs"]["left_s"] == 724.0 and held[0].why["inputs"]["stabilisation_s"] == 900.0
    for t in range(181, 300, 7):  # still held: nothing more to say
        exchange(p, s, t)
        assert s.tick(t) == []
    exchange(p, s, 905)
    notes = s.tick(905)
    assert s.state is S.FAILBACK_ACTIVE
    assert notes[-1].why["rule"] == "failback.automatic" and "stabilisation window ended" in notes[-1].why["text"]


def test_stepping_down_for_a_newer_generation_names_both_generations():
    p, s = synced_pair(failover=Mode.AUTOMATIC, wait=3)
    s.tick(4)
    s.complete_failover(4)
    notes = p.on_heartbeat(5, s.view())
    why = next(n.why for n in notes if n.code == T.STEPPED_DOWN)
    assert why["rule"] == "fence.newer_generation"
    assert why["inputs"] == {"own_generation": 1, "peer_generation": 2, "owner": "secondary"}
