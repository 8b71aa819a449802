"""The database makes impossible states impossible, whatever code writes the rows."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from hapairs.choices import JobKind, JobStatus
from hapairs.models import Appliance, HAEvent, HAPair, Job


def bare_pair(primary, secondary, slot):
    """A pair row written straight through the ORM, bypassing the services' checks."""
    pair = HAPair(primary=primary, secondary=secondary)
    pair.assign_slot(slot)
    pair.save()
    return pair


def test_a_secondary_holds_at_most_two_primaries_in_the_database(make_appliance):
    secondary = make_appliance(name="s")
    p1, p2, p3 = (make_appliance(name=f"p{i}") for i in (1, 2, 3))
    bare_pair(p1, secondary, 1)
    bare_pair(p2, secondary, 2)
    # a third needs a third slot, which the database refuses, or a taken one
    for slot in (1, 2, 3):
        with pytest.raises(IntegrityError), transaction.atomic():
            HAPair.objects.create(
                primary=p3,
                secondary=secondary,
                slot=slot,
                instance_db_name="x",
                instance_db_port=1,
                dataguard_name="x",
                primary_db_alias="x",
            )
    assert HAPair.objects.filter(secondary=secondary).count() == 2


def test_an_appliance_is_primary_of_one_pair_only(make_appliance):
    primary, s1, s2 = make_appliance(name="p"), make_appliance(name="s1"), make_appliance(name="s2")
    bare_pair(primary, s1, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        bare_pair(primary, s2, 1)


def test_a_pair_cannot_back_itself(make_appliance):
    node = make_appliance(name="n")
    with pytest.raises(IntegrityError), transaction.atomic():
        bare_pair(node, node, 1)


def test_a_pair_never_has_two_active_jobs(make_appliance):
    pair = bare_pair(make_appliance(), make_appliance(), 1)
    Job.objects.create(kind=JobKind.SWITCHOVER, pair=pair, status=JobStatus.RUNNING)
    for status in (JobStatus.PENDING, JobStatus.RUNNING):
        with pytest.raises(IntegrityError), transaction.atomic():
            Job.objects.create(kind=JobKind.FAILBACK, pair=pair, status=status)
    # finished jobs do not count, and jobs without a pair are not limited
    Job.objects.create(kind=JobKind.FAILBACK, pair=pair, status=JobStatus.FAILED)
    Job.objects.create(kind=JobKind.START_SERVICES, status=JobStatus.RUNNING)
    Job.objects.create(kind=JobKind.START_SERVICES, status=JobStatus.RUNNING)
    assert Job.objects.filter(pair=pair, status__in=JobStatus.ACTIVE).count() == 1


def test_an_agent_event_is_stored_once_per_node_sequence(make_appliance):
    node = make_appliance()
    now = timezone.now()
    HAEvent.objects.create(
        appliance=node, seq=7, code="active", description="Active", generated_by=node.name, timestamp=now
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        HAEvent.objects.create(
            appliance=node, seq=7, code="active", description="Active", generated_by=node.name, timestamp=now
        )
    # portal events have no sequence and never collide
    for _ in range(2):
        HAEvent.objects.create(appliance=node, code="note", description="note", generated_by="mseportal", timestamp=now)
    assert HAEvent.objects.filter(appliance=node, seq=7).count() == 1
    assert HAEvent.objects.filter(appliance=node, description="note").count() == 2


def test_the_failover_wait_range_is_enforced_by_the_database(make_appliance):
    pair = bare_pair(make_appliance(), make_appliance(), 1)
    for bad in (1, 121):
        with pytest.raises(IntegrityError), transaction.atomic():
            HAPair.objects.filter(pk=pair.pk).update(failover_wait=bad)


def test_a_vip_equal_to_the_hm_ip_is_refused_by_the_database(make_appliance):
    node = make_appliance(hm_ip="127.10.10.12")
    with pytest.raises(IntegrityError), transaction.atomic():
        Appliance.objects.filter(pk=node.pk).update(vip="127.10.10.12", vip_prefixlen=24)


def test_instance_identity_follows_the_slot(make_appliance):
    secondary = make_appliance()
    first = bare_pair(make_appliance(), secondary, 1)
    second = bare_pair(make_appliance(), secondary, 2)
    assert (first.instance_db_name, first.instance_db_port, first.dataguard_name, first.primary_db_alias) == (
        "mseos3",
        1524,
        "dg_mse3",
        "mseop3s",
    )
    assert (second.instance_db_name, second.instance_db_port, second.dataguard_name, second.primary_db_alias) == (
        "mseos4",
        1525,
        "dg_mse4",
        "mseop4s",
    )


def test_the_password_is_encrypted_at_rest(make_appliance):
    node = make_appliance(password="correct horse battery staple")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM hapairs_appliance WHERE id = %s", [node.pk])
        raw_row = " ".join(str(value) for value in cursor.fetchone())
    assert "correct horse" not in raw_row
    assert Appliance.objects.get(pk=node.pk).get_password() == "correct horse battery staple"


def test_netmask_is_derived_from_the_prefix(make_appliance):
    node = make_appliance(hm_ip="127.10.10.12", vip="127.10.10.11", vip_prefixlen=24)
    assert node.netmask == "255.255.255.0"
