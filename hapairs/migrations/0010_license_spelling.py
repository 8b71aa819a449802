"""One spelling: "license" (the user's and Cisco's word). Fields are renamed in place (no
data lost), and the stored values that carried the old spelling are rewritten:

* the expiring-license alert kind, on alerts and on the rate limit's rows, and the alert,
  subject and delivery keys built from it (``licence:9:7`` → ``license:9:7``), so an alert
  already sent is not sent again;
* the job step names in ``Job.step`` and ``Job.steps_done``, so a job resumed after the
  upgrade does not redo a step it finished (the job kinds already said license);
* beat's daily entry (django-celery-beat keeps it in the database under its old name).

Reversible: going back rewrites the same values the other way.
"""

from django.db import migrations, models
from django.db.models import Value
from django.db.models.functions import Concat, Substr
from django.utils import timezone

# Frozen here: later renames must not change what this migration does.
STEP_NAMES = {
    "install_licence": "install_license",
    "install_licences": "install_licenses",
    "remove_licence": "remove_license",
}
ALERT_KINDS = {"licence_expiring": "license_expiring"}
SUBJECT_PREFIX = ("licence:", "license:")  # Alert.key, Alert.subject_key, AlertThrottle.subject_key
DELIVERY_PREFIX = ("alert:licence:", "alert:license:")  # Delivery.key of an expiring-license alert
BEAT_ENTRY = (
    ("licences-expiry-check", "hapairs.tasks.licences_expiry_check"),
    ("licenses-expiry-check", "hapairs.tasks.licenses_expiry_check"),
)


def _swap_prefix(model, field: str, old: str, new: str) -> None:
    model.objects.filter(**{f"{field}__startswith": old}).update(
        **{field: Concat(Value(new), Substr(field, len(old) + 1), output_field=models.CharField())}
    )


def _rename_steps(Job, names: dict[str, str]) -> None:
    changed = []
    for job in Job.objects.only("pk", "step", "steps_done").iterator(chunk_size=500):
        steps_done = job.steps_done if isinstance(job.steps_done, list) else []
        new_done = [names.get(step, step) if isinstance(step, str) else step for step in steps_done]
        new_step = names.get(job.step, job.step)
        if new_done != steps_done or new_step != job.step:
            job.steps_done, job.step = new_done, new_step
            changed.append(job)
    Job.objects.bulk_update(changed, ["step", "steps_done"], batch_size=500)


def _rename_beat_entry(apps, old: tuple[str, str], new: tuple[str, str]) -> None:
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    stale = PeriodicTask.objects.filter(name=old[0])
    if not stale.exists():
        return
    if PeriodicTask.objects.filter(name=new[0]).exists():  # beat already wrote the new entry
        stale.delete()
    else:
        stale.update(name=new[0], task=new[1])
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})  # beat re-reads


def _rewrite(apps, *, forwards: bool) -> None:
    def way(pairs: dict[str, str]) -> dict[str, str]:
        return dict(pairs) if forwards else {new: old for old, new in pairs.items()}

    Alert = apps.get_model("hapairs", "Alert")
    AlertThrottle = apps.get_model("hapairs", "AlertThrottle")
    Delivery = apps.get_model("hapairs", "Delivery")
    Job = apps.get_model("hapairs", "Job")
    for old, new in way(ALERT_KINDS).items():
        Alert.objects.filter(kind=old).update(kind=new)
        AlertThrottle.objects.filter(kind=old).update(kind=new)
    subject = SUBJECT_PREFIX if forwards else SUBJECT_PREFIX[::-1]
    delivery = DELIVERY_PREFIX if forwards else DELIVERY_PREFIX[::-1]
    _swap_prefix(Alert, "key", *subject)
    _swap_prefix(Alert, "subject_key", *subject)
    _swap_prefix(AlertThrottle, "subject_key", *subject)
    _swap_prefix(Delivery, "key", *delivery)
    _rename_steps(Job, way(STEP_NAMES))
    _rename_beat_entry(apps, *(BEAT_ENTRY if forwards else BEAT_ENTRY[::-1]))


def forwards(apps, schema_editor):
    _rewrite(apps, forwards=True)


def backwards(apps, schema_editor):
    _rewrite(apps, forwards=False)


class Migration(migrations.Migration):
    dependencies = [
        ("hapairs", "0009_event_codes_and_causes"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RenameField(model_name="alert", old_name="licence", new_name="license"),
        migrations.RenameField(model_name="licensefile", old_name="agent_licence_id", new_name="agent_license_id"),
        migrations.AlterField(
            model_name="licensefile",
            name="agent_license_id",
            field=models.CharField(blank=True, max_length=64, verbose_name="Agent license id"),
        ),
        migrations.AlterField(
            model_name="alert",
            name="kind",
            field=models.CharField(
                choices=[
                    ("failover", "Failover"),
                    ("failback", "Failback"),
                    ("split_brain", "Split brain"),
                    ("unreachable", "Node unreachable"),
                    ("job_failed", "Job failed"),
                    ("license_expiring", "License expiring"),
                ],
                max_length=20,
            ),
        ),
        migrations.AlterField(
            model_name="alert",
            name="subject_key",
            field=models.CharField(
                help_text="What the rate limit counts per: pair:3, appliance:5, license:9.", max_length=64
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="kind",
            field=models.CharField(
                choices=[
                    ("add_appliance", "Add appliance"),
                    ("configure_ha", "Configure high availability"),
                    ("update_ha", "Update high availability parameters"),
                    ("activate_secondary", "Activate secondary"),
                    ("install_license", "Install license"),
                    ("remove_license", "Remove license"),
                    ("switchover", "Switchover"),
                    ("failback", "Failback"),
                    ("delete_secondary", "Delete secondary"),
                    ("recover_primary", "Recover primary"),
                    ("start_services", "Start services"),
                    ("set_maintenance", "Set maintenance mode"),
                ],
                max_length=24,
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
