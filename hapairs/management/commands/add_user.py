"""Create a portal user with a role, or change an existing one's role (production's first
Admin, with no demo passwords): ``python -m django add_user alice --role Admin``.

The password is asked twice on the terminal (never an argument, which ``ps`` and shell
histories keep); ``--password-stdin`` reads it from standard input for scripts. Django's
password validators apply. An Admin is also staff (the admin site)."""

from __future__ import annotations

import getpass
import sys

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from hapairs.roles import ADMIN, MONITOR, OPERATOR

ROLES = (ADMIN, OPERATOR, MONITOR)


class Command(BaseCommand):
    help = "Create a user with a role (Admin, Operator, Monitor), or set an existing user's role."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    def handle(self, *args, username: str, role: str, password_stdin: bool, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        password = None
        if user is None:
            password = self._password(password_stdin)
            candidate = User(username=username)
            try:
                User._meta.get_field("username").run_validators(username)
                password_validation.validate_password(password, candidate)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
        group = Group.objects.filter(name=role).first()
        if group is None:
            raise CommandError(f"No {role} group: run `migrate` first (a migration creates the roles).")
        with transaction.atomic():
            if user is None:
                user = User.objects.create_user(username=username, password=password)
            user.is_staff = role == ADMIN
            user.save(update_fields=["is_staff"])
            user.groups.set([group])
        self.stdout.write(f"{username}: {role}")

    def _password(self, from_stdin: bool) -> str:
        if from_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password (again): ") != password:
                raise CommandError("The two passwords differ; nothing was changed.")
        if not password:
            raise CommandError("An empty password; nothing was changed.")
        return password
