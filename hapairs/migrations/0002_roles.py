"""Create the Admin, Operator and Monitor groups with their permissions."""

from django.db import migrations

from hapairs.roles import sync_groups


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Admin", "Operator", "Monitor"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("hapairs", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(sync_groups, remove_groups)]
