from django.apps import AppConfig


class HapairsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "hapairs"
    verbose_name = "High Availability"
