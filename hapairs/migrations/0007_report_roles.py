"""Give the roles their report permissions: Monitors read schedules, deliveries and
alerts; Operators and Admins also edit schedules and send reports now."""

from django.db import migrations

from hapairs.roles import sync_groups


class Migration(migrations.Migration):
    dependencies = [
        ("hapairs", "0006_reports_alerts_deliveries"),
    ]

    operations = [migrations.RunPython(sync_groups, migrations.RunPython.noop)]
