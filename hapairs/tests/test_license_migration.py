"""Migration 0010 (one spelling, "license"): fields renamed with their data, and the stored
values that carried the old spelling rewritten, both ways."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("hapairs", "0009_event_codes_and_causes")]
AFTER = [("hapairs", "0010_license_spelling")]


def migrate(targets):
    """Migrate to ``targets``; the models as they were there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def migrate_to_latest():
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def seed_old_rows(apps) -> dict:
    """Rows as a portal before the rename wrote them."""
    Appliance = apps.get_model("hapairs", "Appliance")
    LicenseFile = apps.get_model("hapairs", "LicenseFile")
    License = apps.get_model("hapairs", "License")
    Alert = apps.get_model("hapairs", "Alert")
    AlertThrottle = apps.get_model("hapairs", "AlertThrottle")
    Delivery = apps.get_model("hapairs", "Delivery")
    Job = apps.get_model("hapairs", "Job")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")

    appliance = Appliance.objects.create(name="va1", device_type="VA-Low", hm_ip="127.30.0.1", version="8.0.110.0")
    upload = LicenseFile.objects.create(
        filename="va1.lic",
        sha256="a" * 64,
        content="INCREMENT ...",
        appliance=appliance,
        agent_licence_id="9f86d081884c7d65",
    )
    line = License.objects.create(
        source_file=upload, feature="CAS_ELEMENTS", count=100, host_udi="ANY", version="7.0", status="installed"
    )
    alert = Alert.objects.create(
        kind="licence_expiring",
        key=f"licence:{line.pk}:7",
        subject_key=f"licence:{line.pk}",
        licence=line,
        title="t",
        actor="the portal",
        status="sent",
    )
    Alert.objects.create(kind="failover", key="event:3", subject_key="pair:1", title="f", actor="a", status="sent")
    AlertThrottle.objects.create(subject_key=f"licence:{line.pk}", kind="licence_expiring")
    Delivery.objects.create(
        key=f"alert:licence:{line.pk}:7:email",
        kind="alert",
        alert=alert,
        recipients=["noc@x"],
        subject="s",
        body_text="b",
    )
    resumed = Job.objects.create(kind="install_license", appliance=appliance, step="install_licence", steps_done=[])
    pairing = Job.objects.create(
        kind="configure_ha",
        status="succeeded",
        step="start_secondary",
        steps_done=["validate", "install_licences", "start_secondary"],
    )
    removal = Job.objects.create(
        kind="remove_license",
        status="succeeded",
        step="record_removed",
        steps_done=["remove_licence", "record_removed"],
    )
    every_day = IntervalSchedule.objects.create(every=1, period="days")
    PeriodicTask.objects.create(
        name="licences-expiry-check", task="hapairs.tasks.licences_expiry_check", interval=every_day
    )
    return {
        "upload": upload.pk,
        "line": line.pk,
        "alert": alert.pk,
        "resumed": resumed.pk,
        "pairing": pairing.pk,
        "removal": removal.pk,
    }


def test_the_spelling_migration_keeps_every_value_and_rewrites_the_old_spelling_both_ways():
    try:
        ids = seed_old_rows(migrate(BEFORE))

        apps = migrate(AFTER)
        Alert, Job = apps.get_model("hapairs", "Alert"), apps.get_model("hapairs", "Job")
        line = ids["line"]
        assert (
            apps.get_model("hapairs", "LicenseFile").objects.get(pk=ids["upload"]).agent_license_id
            == "9f86d081884c7d65"
        )
        alert = Alert.objects.get(pk=ids["alert"])
        assert (alert.kind, alert.key, alert.subject_key, alert.license_id) == (
            "license_expiring",
            f"license:{line}:7",
            f"license:{line}",
            line,
        )
        assert Alert.objects.get(key="event:3").subject_key == "pair:1"  # other alerts untouched
        throttle = apps.get_model("hapairs", "AlertThrottle").objects.get()
        assert (throttle.kind, throttle.subject_key) == ("license_expiring", f"license:{line}")
        assert apps.get_model("hapairs", "Delivery").objects.get().key == f"alert:license:{line}:7:email"
        resumed = Job.objects.get(pk=ids["resumed"])
        assert (resumed.step, resumed.steps_done) == ("install_license", [])
        assert Job.objects.get(pk=ids["pairing"]).steps_done == ["validate", "install_licenses", "start_secondary"]
        assert Job.objects.get(pk=ids["removal"]).steps_done == ["remove_license", "record_removed"]
        beat = apps.get_model("django_celery_beat", "PeriodicTask").objects.get(name__contains="expiry-check")
        assert (beat.name, beat.task) == ("licenses-expiry-check", "hapairs.tasks.licenses_expiry_check")

        # The step names the migration writes are the ones the job kinds run now.
        from hapairs.jobsteps import STEPS

        current = {step.name for steps in STEPS.values() for step in steps}
        assert {"install_license", "install_licenses", "remove_license"} <= current

        apps = migrate(BEFORE)
        alert = apps.get_model("hapairs", "Alert").objects.get(pk=ids["alert"])
        assert (alert.kind, alert.key, alert.licence_id) == ("licence_expiring", f"licence:{line}:7", line)
        assert apps.get_model("hapairs", "LicenseFile").objects.get().agent_licence_id == "9f86d081884c7d65"
        assert apps.get_model("hapairs", "Job").objects.get(pk=ids["pairing"]).steps_done[1] == "install_licences"
        assert apps.get_model("hapairs", "Delivery").objects.get().key.startswith("alert:licence:")
        assert (
            apps.get_model("django_celery_beat", "PeriodicTask")
            .objects.filter(name="licences-expiry-check", task="hapairs.tasks.licences_expiry_check")
            .exists()
        )
    finally:
        migrate_to_latest()


def test_the_old_beat_task_name_still_runs_the_check():
    from celery import current_app

    from hapairs import tasks

    assert current_app.tasks["hapairs.tasks.licences_expiry_check"].run() == tasks.licenses_expiry_check.run() == []
