from django.apps import AppConfig


class HapairsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "hapairs"
    verbose_name = "High Availability"

    def ready(self) -> None:
        """Every job kind's steps, registered once in every process (web, worker, beat, shell),
        so ``jobs.run`` finds them wherever it is called from."""
        # Not a cycle: Django imports apps.py before the models exist, and the steps need them;
        # ready() is where an app's modules may first be imported.
        from django.conf import settings
        from django.contrib.admin.models import LogEntry
        from django.core.exceptions import ImproperlyConfigured
        from django.db.models.signals import post_save

        from hapairs import jobsteps
        from hapairs.audit import admin_logged
        from hapairs.choices import EventCode

        jobsteps.register_all()
        post_save.connect(admin_logged, sender=LogEntry, dispatch_uid="hapairs.audit.admin_logged")
        unknown = sorted(set(settings.EVENT_WEBHOOKS) - set(EventCode.values))
        if unknown:
            raise ImproperlyConfigured(
                f"MSEPORTAL_EVENT_WEBHOOKS names event codes the portal does not have: {', '.join(unknown)} "
                f"(the codes: {', '.join(sorted(EventCode.values))})"
            )
