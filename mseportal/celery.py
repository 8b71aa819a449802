"""The Celery application: configuration comes from Django settings (CELERY_*)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mseportal.settings")

app = Celery("mseportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# a worker polls only the shards it owns (hapairs.sharding, Owners): its own bootstep
from mseportal.worker_steps import PollShardOwner  # noqa: E402

app.steps["consumer"].add(PollShardOwner)
