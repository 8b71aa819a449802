"""Every event gets a stable code (the portal decides by codes, not by English sentences)
and the key of the command that caused it. Existing rows are mapped from their text: the
agents' words through the protocol's table of protocol-1 texts, the portal's own by their
fixed shapes; a text that matches none becomes ``note``."""

import re

from django.db import migrations, models

from nodeagent.protocol import V1_TEXT_CODES

# The portal's own event texts before codes, by shape (frozen here: later wording changes
# must not change what old rows mean).
PORTAL_TEXTS = (
    (r"^Mobility Services Engine added$", "appliance_added"),
    (r"^Appliance password changed$", "appliance_password_changed"),
    (r"^High availability pair recorded$", "pair_recorded"),
    (r"^Maintenance mode on\b", "maintenance_on"),
    (r"^Maintenance mode off\b", "maintenance_off"),
    (r"^Maintenance mode not told to the primary$", "maintenance_not_told"),
    (r"^Secondary .+ deleted; ", "secondary_deleted"),
    (r"^Primary .+ recovered from ", "primary_recovered"),
    (r"^Licen[cs]e file uploaded$", "license_uploaded"),
    (r"^Licen[cs]e installed$", "license_installed"),
    (r"^Licen[cs]e removed$", "license_removed"),
    (r"^Report schedule .+ created$", "report_schedule_created"),
    (r"^Report schedule .+ updated$", "report_schedule_updated"),
    (r"^Report schedule .+ deleted$", "report_schedule_deleted"),
    (r"^Split brain detected", "split_brain"),
    (r"^.+ is not answering the portal$", "node_unreachable"),
    (r"^\d+ nodes stopped answering the portal at once$", "nodes_unreachable"),
    (r"^Event log of .+ restarted$", "event_log_restarted"),
)
JOB_TEXTS = (
    (r" requested$", "job_requested"),
    (r" completed$", "job_completed"),
    (r" failed$", "job_failed"),
    (r" cancelled$", "job_cancelled"),
)


def code_of(description: str, has_job: bool, from_agent: bool) -> str:
    if from_agent and description in V1_TEXT_CODES:
        return V1_TEXT_CODES[description].value
    for pattern, code in PORTAL_TEXTS:
        if re.search(pattern, description):
            return code
    if has_job:
        for pattern, code in JOB_TEXTS:
            if re.search(pattern, description):
                return code
    if description in V1_TEXT_CODES:  # e.g. "Configuration updated" written by the portal
        return V1_TEXT_CODES[description].value
    return "note"


def forwards(apps, schema_editor):
    HAEvent = apps.get_model("hapairs", "HAEvent")
    by_code: dict[str, list[int]] = {}
    rows = HAEvent.objects.values_list("pk", "description", "job_id", "seq").iterator(chunk_size=2000)
    for pk, description, job_id, seq in rows:
        by_code.setdefault(code_of(description, job_id is not None, seq is not None), []).append(pk)
    for code, pks in by_code.items():
        for i in range(0, len(pks), 1000):
            HAEvent.objects.filter(pk__in=pks[i : i + 1000]).update(code=code)


CHOICES = [
    ("config_created", "Configuration successfully created"),
    ("sync_in_progress", "Primary and secondary server synchronization in progress"),
    ("heartbeats_setup", "Heartbeats have been setup successfully"),
    ("active", "Active"),
    ("config_updated", "Configuration updated"),
    ("config_restored", "High availability configuration restored from the manager"),
    ("failover_shutting_down_primary", "Failover invoked; shutting down primary instance"),
    ("failover_reconfiguring_db", "Failover has been invoked. Reconfiguring instance database"),
    ("failover_starting_instance", "Failover invoked; starting application instance"),
    ("failover_active", "Instance is in failover active state"),
    ("failback_in_progress", "Failback in progress; starting primary database instance"),
    ("failback_complete", "Failback complete; primary instance is in charge"),
    ("failback_aborted", "Failback aborted"),
    ("not_synchronized", "Primary instance is not synchronized with the secondary server. In progress."),
    ("heartbeats_lost", "Heartbeats lost with peer"),
    ("heartbeats_restored", "Heartbeats restored with peer"),
    ("stepped_down", "Newer generation seen; released the virtual IP"),
    ("peer_graceful", "Peer was stopped by hand; no failover will be triggered"),
    ("services_stopped", "Services stopped by the administrator"),
    ("services_started", "Services started"),
    ("peer_deleted", "High availability configuration deleted"),
    ("license_installed", "License installed"),
    ("license_removed", "License removed"),
    ("replication_down", "Data replication down; primary is running alone"),
    ("vip_taken", "Virtual IP taken"),
    ("vip_released", "Virtual IP released"),
    ("appliance_added", "Mobility Services Engine added"),
    ("appliance_password_changed", "Appliance password changed"),
    ("appliance_changed", "Appliance changed"),
    ("pair_recorded", "High availability pair recorded"),
    ("maintenance_on", "Maintenance mode on: automatic failover paused"),
    ("maintenance_off", "Maintenance mode off"),
    ("maintenance_not_told", "Maintenance mode not told to the primary"),
    ("secondary_deleted", "Secondary deleted"),
    ("primary_recovered", "Primary recovered"),
    ("job_requested", "Job requested"),
    ("job_completed", "Job completed"),
    ("job_failed", "Job failed"),
    ("job_cancelled", "Job cancelled"),
    ("license_uploaded", "License file uploaded"),
    ("report_schedule_created", "Report schedule created"),
    ("report_schedule_updated", "Report schedule updated"),
    ("report_schedule_deleted", "Report schedule deleted"),
    ("split_brain", "Split brain detected: primary and secondary are both active"),
    ("node_unreachable", "Node is not answering the portal"),
    ("nodes_unreachable", "Nodes stopped answering the portal at once"),
    ("event_log_restarted", "Event log restarted"),
    ("token_issued", "API token issued"),
    ("token_revoked", "API token revoked"),
    ("note", "Note"),
]


class Migration(migrations.Migration):
    dependencies = [("hapairs", "0008_job_kind_set_maintenance")]

    operations = [
        migrations.AddField(
            model_name="haevent",
            name="code",
            field=models.CharField(choices=CHOICES, default="note", max_length=40),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="haevent",
            name="cause_key",
            field=models.CharField(blank=True, default="", max_length=200),
            preserve_default=False,
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="haevent",
            index=models.Index(fields=["code", "timestamp"], name="haevent_code_time"),
        ),
    ]
