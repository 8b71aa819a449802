"""Create the demo users of `make run` (development only) and print their logins."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from hapairs.roles import ADMIN, MONITOR, OPERATOR

DEMO_USERS = (
    # username, password, role, staff (admin site)
    ("admin", "mse-demo-admin", ADMIN, True),
    ("operator", "mse-demo-operator", OPERATOR, False),
    ("monitor", "mse-demo-monitor", MONITOR, False),
)


class Command(BaseCommand):
    help = "Create the demo users (admin, operator, monitor) with known passwords. Refused unless DEBUG is on."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("Demo users have well-known passwords: they are created only with DEBUG=1.")
        User = get_user_model()
        for username, password, role, staff in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
            user.is_staff = staff
            user.is_superuser = role == ADMIN
            user.save()
            user.groups.set([Group.objects.get(name=role)])
            state = "created" if created else "exists"
            self.stdout.write(f"demo {role:<8} login: {username} / {password}  ({state})")
        self.stdout.write("Portal: http://127.0.0.1:8000/  ·  Admin: http://127.0.0.1:8000/admin/")
