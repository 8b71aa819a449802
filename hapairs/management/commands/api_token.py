"""Print a new API token for a user (on the last line); the previous one stops working."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from hapairs.roles import role_of
from hapairs.services.tokens import api_token_issue, api_token_revoke


class Command(BaseCommand):
    help = (
        "Issue an API token for USER and print it on the last line (send it as "
        "'Authorization: Bearer TOKEN'). Issuing a new token revokes the user's previous one."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--revoke", action="store_true", help="revoke the user's token instead of issuing one")

    def handle(self, *args, username: str, revoke: bool, **options):
        User = get_user_model()
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive; activate it before issuing a token.")
        if revoke:
            revoked = api_token_revoke(user=user)
            self.stdout.write("Token revoked." if revoked else f"{username} had no token.")
            return
        role = role_of(user)
        if role is None:
            self.stderr.write(f"Warning: {username} has no role (Admin, Operator or Monitor); the API will refuse it.")
        self.stdout.write(f"API token for {username} ({role or 'no role'}); the previous token, if any, is revoked:")
        self.stdout.write(api_token_issue(user=user))
