"""Services: validated, atomic writes that record events — and hold under concurrency."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction

from hapairs import services
from hapairs.models import Appliance, HAEvent, HAPair


@pytest.fixture
def seed_2_to_1(make_appliance):
    """Spec §7 '2:1 on a 3355', mapped to loopback."""
    secondary = make_appliance(name="mse3355-2", device_type="3355", hm_ip="127.10.10.16", role="secondary")
    mse3310 = make_appliance(
        name="mse3310", device_type="3310", hm_ip="127.10.10.17", vip="127.10.10.18", vip_prefixlen=24, role="primary"
    )
    mse3350 = make_appliance(
        name="mse3350", device_type="3350", hm_ip="127.10.10.22", vip="127.10.10.21", vip_prefixlen=24, role="primary"
    )
    return secondary, mse3310, mse3350


def primary_3310(make_appliance, n):
    return make_appliance(
        name=f"extra{n}",
        device_type="3310",
        hm_ip=f"127.10.10.{30 + n}",
        vip=f"127.10.10.{60 + n}",
        vip_prefixlen=24,
        role="primary",
    )


# --- appliances -------------------------------------------------------------------
def test_appliance_create_records_an_event_and_encrypts(make_appliance):
    node = make_appliance(name="mse1", password="pw-1")
    assert node.get_password() == "pw-1"
    assert HAEvent.objects.filter(appliance=node, description="Mobility Services Engine added").exists()


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"name": "bad name!"}, "name"),
        ({"hm_ip": "10.10.10.300"}, "hm_ip"),
        ({"version": "latest"}, "version"),
        ({"device_type": "3399"}, "device_type"),
        ({"password": ""}, "password"),
    ],
)
def test_bad_appliance_input_is_refused_and_nothing_is_written(make_appliance, overrides, field):
    with pytest.raises(services.ServiceError) as caught:
        make_appliance(**overrides)
    assert field in caught.value.errors
    assert Appliance.objects.count() == 0
    assert HAEvent.objects.count() == 0


def test_a_duplicate_name_is_refused(make_appliance):
    make_appliance(name="mse1")
    with pytest.raises(services.ServiceError) as caught:
        make_appliance(name="mse1")
    assert "name" in caught.value.errors
    assert Appliance.objects.filter(name="mse1").count() == 1


# --- pairs ---------------------------------------------------------------------------
def test_the_seed_2_to_1_pairs_take_mseos3_then_mseos4(seed_2_to_1):
    secondary, mse3310, mse3350 = seed_2_to_1
    first = services.ha_pair_create(primary=mse3310, secondary=secondary)
    second = services.ha_pair_create(primary=mse3350, secondary=secondary, failover_type="automatic")
    assert (first.instance_db_name, first.instance_db_port) == ("mseos3", 1524)
    assert (second.instance_db_name, second.instance_db_port, second.dataguard_name) == ("mseos4", 1525, "dg_mse4")
    assert HAEvent.objects.filter(pair=second, description="High availability pair recorded").exists()


def test_a_refused_pairing_creates_nothing_and_says_why_per_field(make_appliance):
    primary = make_appliance(name="p", device_type="3350", hm_ip="127.10.10.22", vip="127.10.10.21", vip_prefixlen=24)
    secondary = make_appliance(name="s", device_type="3310", hm_ip="127.10.10.16", version="8.0.110.0")
    events_before = HAEvent.objects.count()
    with pytest.raises(services.ServiceError) as caught:
        services.ha_pair_create(primary=primary, secondary=secondary, failover_wait=500)
    messages = caught.value.errors
    assert any("equal or higher specification" in m for m in messages["secondary_name"])
    assert any("same software version" in m for m in messages["secondary_name"])
    assert messages["failover_wait"]
    assert HAPair.objects.count() == 0
    assert HAEvent.objects.count() == events_before


def test_an_unactivated_va_secondary_is_refused_with_the_license_field(make_appliance):
    mse1 = make_appliance(name="mse1", device_type="VA-Low", hm_ip="127.10.10.12", vip="127.10.10.11", vip_prefixlen=24)
    mse2 = make_appliance(name="mse2", device_type="VA-Low", hm_ip="127.10.10.13")
    with pytest.raises(services.ServiceError) as caught:
        services.ha_pair_create(primary=mse1, secondary=mse2)
    assert "license_file" in caught.value.errors
    assert HAPair.objects.count() == 0


def test_a_primary_cannot_be_paired_twice(seed_2_to_1, make_appliance):
    secondary, mse3310, _ = seed_2_to_1
    services.ha_pair_create(primary=mse3310, secondary=secondary)
    other = make_appliance(name="other-sec", device_type="3355", hm_ip="127.10.10.40")
    with pytest.raises(services.ServiceError, match="already paired"):
        services.ha_pair_create(primary=mse3310, secondary=other)


def test_a_secondary_cannot_become_a_primary(seed_2_to_1, make_appliance):
    secondary, mse3310, _ = seed_2_to_1
    services.ha_pair_create(primary=mse3310, secondary=secondary)
    another = make_appliance(name="s9", device_type="3355", hm_ip="127.10.10.41")
    with pytest.raises(services.ServiceError, match="secondary in another pair"):
        services.ha_pair_create(primary=secondary, secondary=another)


# --- concurrency (PostgreSQL: real row locks and real concurrent transactions) -------
pg_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (CI sets DATABASE_URL)")


def _race(functions):
    """Run the callables at the same instant in threads; return (results, errors)."""
    barrier = threading.Barrier(len(functions))
    results, errors = [], []

    def run(fn):
        try:
            barrier.wait(timeout=10)
            results.append(fn())
        except Exception as exc:  # collected and asserted on by the caller
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(fn,)) for fn in functions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results, errors


@pg_only
def test_a_pairing_of_two_nodes_whose_clocks_are_too_far_apart_is_refused_saying_so(seed_2_to_1):
    """Two nodes each near the portal's clock but 400 s from each other would refuse each
    other's signed requests: the check refuses the pairing (a 409: fix the clocks, then pair)."""
    secondary, primary, _ = seed_2_to_1
    Appliance.objects.filter(pk=primary.pk).update(clock_offset_ms=-200_000)
    Appliance.objects.filter(pk=secondary.pk).update(clock_offset_ms=200_000)
    primary.refresh_from_db()
    check = services.ha_configure_check(primary=primary, secondary_name=secondary.name, secondary_ip=secondary.hm_ip)
    (message,) = check.errors["__all__"]
    assert message.startswith("mse3310's and mse3355-2's clocks are 400 s apart (mse3310: 200 s behind the portal's;")
    assert "same NTP servers" in message and check.error().conflict
    with pytest.raises(services.ServiceError, match="400 s apart"):
        services.ha_configure(primary=primary, secondary_name=secondary.name, secondary_ip=secondary.hm_ip,
                              secondary_password="", failover_wait=10, reason="pair")  # fmt: skip
    assert not HAPair.objects.exists()
    # within a few seconds of each other (or not measured yet) they pair
    Appliance.objects.filter(pk=secondary.pk).update(clock_offset_ms=-197_500)
    ok = services.ha_configure_check(primary=primary, secondary_name=secondary.name, secondary_ip=secondary.hm_ip)
    assert "__all__" not in ok.errors, ok.errors
    Appliance.objects.filter(pk=secondary.pk).update(clock_offset_ms=None)
    ok = services.ha_configure_check(primary=primary, secondary_name=secondary.name, secondary_ip=secondary.hm_ip)
    assert "__all__" not in ok.errors, ok.errors


@pytest.mark.django_db(transaction=True)  # the foreign keys are checked at commit
def test_a_job_that_forgets_its_pair_ends_with_its_completed_event_not_naming_the_pair(seed_2_to_1):
    """The last step of "Remove the pairing from the primary only" deletes the pair; the
    job's completed event then named the deleted pair, the commit refused it, and the job
    ended with no event (its task crashed after it was marked succeeded)."""
    from hapairs import jobs
    from hapairs.models import Job

    secondary, primary, _ = seed_2_to_1
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    # the agent step done already (as by an earlier attempt): only the portal's own step runs
    job = Job.objects.create(kind="remove_from_primary", pair=pair, steps_done=["delete_on_primary"], reason="gone")
    assert jobs.run(job.pk) == "succeeded"
    job.refresh_from_db()
    assert not HAPair.objects.filter(pk=pair.pk).exists() and job.pair_id is None and job.status == "succeeded"
    completed = HAEvent.objects.get(code="job_completed", job=job)
    assert completed.pair_id is None
    assert HAEvent.objects.filter(code="secondary_deleted", appliance=primary, job=job).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_pairings_never_give_a_3355_a_third_primary(seed_2_to_1, make_appliance):
    # Given a 3355 that already backs one primary
    secondary, mse3310, mse3350 = seed_2_to_1
    services.ha_pair_create(primary=mse3310, secondary=secondary)
    extra = primary_3310(make_appliance, 1)
    # When two operators pair two more primaries with it at the same instant
    results, errors = _race(
        [
            lambda: services.ha_pair_create(primary=mse3350, secondary=secondary),
            lambda: services.ha_pair_create(primary=extra, secondary=secondary),
        ]
    )
    # Then exactly one succeeds, the other is told why, and the 3355 backs two
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    assert isinstance(errors[0], services.ServiceError)
    assert "two primaries" in errors[0].message or "at most 2" in errors[0].message
    assert HAPair.objects.filter(secondary=secondary).count() == 2


@pg_only
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_database_alone_stops_a_third_primary_when_code_skips_the_lock(seed_2_to_1, make_appliance):
    # Given a 3355 with one primary, and writers that skip the services' row lock
    secondary, mse3310, mse3350 = seed_2_to_1
    services.ha_pair_create(primary=mse3310, secondary=secondary)
    extra = primary_3310(make_appliance, 2)

    both_have_read = threading.Barrier(2)

    def naive_insert(primary):
        def insert():
            with transaction.atomic():
                slot = HAPair.objects.filter(secondary=secondary).count() + 1
                both_have_read.wait(timeout=10)  # both saw one pair, so both pick slot 2
                pair = HAPair(primary=primary, secondary=secondary)
                pair.assign_slot(slot)
                pair.save()
                return pair

        return insert

    # When both insert at once
    results, errors = _race([naive_insert(mse3350), naive_insert(extra)])
    # Then the unique slot index refuses one of them
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    assert isinstance(errors[0], IntegrityError)
    assert HAPair.objects.filter(secondary=secondary).count() == 2


# --- the pairing preconditions: one function for the live check and the Save ----------------------
def _given_two_3355(make_appliance):
    make_appliance(name="s3355", device_type="3355", hm_ip="127.10.10.16")


def _given_s3355_primary_of_another_pair(make_appliance):
    s3355 = make_appliance(name="s3355", device_type="3355", hm_ip="127.10.10.16", vip="127.10.11.16", vip_prefixlen=16)
    services.ha_pair_create(
        primary=s3355, secondary=make_appliance(name="t3355", device_type="3355", hm_ip="127.10.10.19")
    )


def _given_a_smaller_secondary(make_appliance):
    make_appliance(name="s3310", device_type="3310", hm_ip="127.10.10.17")


PRECONDITIONS = {
    "its own secondary": (
        _given_two_3355,
        {"secondary_name": "p3355", "secondary_ip": "127.10.10.15"},
        {"secondary_name": ["p3355 cannot be its own secondary."]},
    ),
    "another health monitor ip": (
        _given_two_3355,
        {"secondary_name": "s3355", "secondary_ip": "127.10.10.99"},
        {"secondary_ip": ["s3355's Health Monitor IP is 127.10.10.16, not 127.10.10.99."]},
    ),
    "the ip of another appliance": (
        _given_two_3355,
        {"secondary_name": "new", "secondary_ip": "127.10.10.16"},
        {"secondary_ip": ["127.10.10.16 is registered as s3355, not new."]},
    ),
    "an unknown secondary without its password": (
        _given_two_3355,
        {"secondary_name": "new", "secondary_ip": "127.10.99.50"},
        {"secondary_password": ["Enter new's password: the portal must contact it to pair it."]},
    ),
    "the primary of another pair": (
        _given_s3355_primary_of_another_pair,
        {"secondary_name": "s3355", "secondary_ip": "127.10.10.16"},
        {"secondary_name": ["s3355 is the primary of another pair; it cannot be a secondary."]},
    ),
    "a pairing rule": (
        _given_a_smaller_secondary,
        {"secondary_name": "s3310", "secondary_ip": "127.10.10.17"},
        {
            "secondary_name": [
                "MSE-3310 cannot back up an MSE-3355: the secondary must be of equal or higher specification."
            ]
        },
    ),
}


@pytest.mark.parametrize("case", list(PRECONDITIONS))
def test_the_live_check_and_the_save_refuse_with_the_same_sentences_and_write_nothing(make_appliance, case):
    # Given a 3355 primary and the case's other appliances
    primary = make_appliance(
        name="p3355", device_type="3355", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24
    )
    given, typed, expected = PRECONDITIONS[case]
    given(make_appliance)
    before = (Appliance.objects.count(), HAPair.objects.count(), HAEvent.objects.count())
    # When the configure screen checks what is typed, and when the same is saved
    check = services.ha_configure_check(primary=primary, **typed)
    with pytest.raises(services.ServiceError) as caught:
        services.ha_configure(primary=primary, secondary_password="", **typed)
    # Then both give the same refusals, next to the same fields, and nothing is written
    assert check.errors == expected
    assert caught.value.errors == expected and caught.value.field == next(iter(expected))
    assert (Appliance.objects.count(), HAPair.objects.count(), HAEvent.objects.count()) == before


def test_the_live_check_of_a_pairing_that_passes_says_what_it_knows_of_the_secondary(make_appliance):
    primary = make_appliance(
        name="p3355", device_type="3355", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24
    )
    make_appliance(name="s3355", device_type="3355", hm_ip="127.10.10.16", udi="AIR-MSE-3355-K9:V01:S1")
    check = services.ha_configure_check(primary=primary, secondary_name="s3355", secondary_ip="127.10.10.16")
    assert check.errors == {} and check.secondary.name == "s3355" and check.discovered is None
    assert check.facts == {
        "udi": "AIR-MSE-3355-K9:V01:S1",
        "activation": "",
        "device_type": "MSE-3355",
        "version": "7.2.103.0",
    }
    pair, job = services.ha_configure(
        primary=primary, secondary_name="s3355", secondary_ip="127.10.10.16", secondary_password=""
    )
    assert (pair.primary, pair.secondary.name, job.kind) == (primary, "s3355", "configure_ha")


# --- API tokens: issued and revoked on the record -------------------------------------------------
def test_issuing_and_revoking_a_token_is_recorded_with_who_for_whom_and_never_the_secret(operator_user, admin_user_):
    # When an Admin issues a token for an Operator, issues another, and revokes it (twice)
    first = services.api_token_issue(user=operator_user, by=admin_user_)
    second = services.api_token_issue(user=operator_user, by=admin_user_)
    assert services.api_token_revoke(user=operator_user, by=admin_user_) is True
    assert services.api_token_revoke(user=operator_user, by=admin_user_) is False  # nothing left, nothing recorded
    # Then each is a portal event (no pair, no appliance) saying who did it, for whom, which token
    events = list(HAEvent.objects.filter(code__in=["token_issued", "token_revoked"]).order_by("pk"))
    assert [(e.code, e.description, e.generated_by, e.pair_id, e.appliance_id) for e in events] == [
        ("token_issued", "API token issued for operator1", "admin1", None, None),
        ("token_issued", "API token issued for operator1", "admin1", None, None),
        ("token_revoked", "API token revoked for operator1", "admin1", None, None),
    ]
    assert [e.remarks for e in events] == [
        f"Token {first[:12]}…, scope admin",
        f"Token {second[:12]}…, scope admin; the previous token stops working.",
        f"Token {second[:12]}…",
    ]
    assert not any(token[12:] in event.remarks for event in events for token in (first, second))
    assert services.api_token_user(second) is None
