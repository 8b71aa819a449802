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
        from hapairs import jobsteps

        jobsteps.register_all()
