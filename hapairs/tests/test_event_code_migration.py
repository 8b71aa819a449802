"""Migration 0009 (event codes): every event stored before codes existed gets the code its
text stands for — the agents' words through the protocol's table, the portal's by their
fixed shapes — so severity, alerts, reports and last failover keep working on old rows."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("hapairs", "0008_job_kind_set_maintenance")]
AFTER = [("hapairs", "0009_event_codes_and_causes")]

# (description, from an agent (has a seq), has a job) → the code it must get
OLD_ROWS = [
    ("Instance is in failover active state", True, False, "failover_active"),
    ("Failback complete; primary instance is in charge", True, False, "failback_complete"),
    ("Heartbeats lost with peer", True, False, "heartbeats_lost"),
    ("Licence installed", True, False, "license_installed"),
    ("Virtual IP taken", True, False, "vip_taken"),
    ("Split brain detected: primary and secondary are both active", False, False, "split_brain"),
    ("seoul-s is not answering the portal", False, False, "node_unreachable"),
    ("7 nodes stopped answering the portal at once", False, False, "nodes_unreachable"),
    ("Switchover requested", False, True, "job_requested"),
    ("Switchover failed", False, True, "job_failed"),
    ("Secondary mse2 deleted; mse1 runs without high availability", False, False, "secondary_deleted"),
    ("Report schedule “Daily” created", False, False, "report_schedule_created"),
    ("Configuration updated", False, False, "config_updated"),
    ("Something an operator typed long ago", False, False, "note"),
    ("Backup failed", False, False, "note"),  # "failed" alone is a job's word only on a job's event
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def migrate_to_latest():
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_old_events_get_the_code_their_text_stands_for():
    # Given events a portal without codes stored
    apps = migrate(BEFORE)
    Appliance = apps.get_model("hapairs", "Appliance")
    HAEvent = apps.get_model("hapairs", "HAEvent")
    Job = apps.get_model("hapairs", "Job")
    node = Appliance.objects.create(name="old1", device_type="3355", hm_ip="127.31.0.1", version="8.0.110.0")
    job = Job.objects.create(kind="switchover")
    now = datetime.datetime.now(datetime.UTC)
    ids = {}
    try:
        for seq, (text, from_agent, with_job, _) in enumerate(OLD_ROWS, 1):
            row = HAEvent.objects.create(
                appliance=node,
                seq=seq if from_agent else None,
                job=job if with_job else None,
                description=text,
                generated_by="x",
                timestamp=now,
            )
            ids[row.pk] = text
        # When the migration runs
        apps = migrate(AFTER)
        # Then each has its code, and no cause (none was recorded then)
        HAEvent = apps.get_model("hapairs", "HAEvent")
        got = {ids[row.pk]: row.code for row in HAEvent.objects.filter(pk__in=ids)}
        assert got == {text: code for text, _, _, code in OLD_ROWS}
        assert set(HAEvent.objects.filter(pk__in=ids).values_list("cause_key", flat=True)) == {""}
    finally:
        migrate_to_latest()
