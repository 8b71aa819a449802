"""Print a new API token for a user (on the last line); the previous one stops working."""

from __future__ import annotations

import getpass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from hapairs.audit import audit_context
from hapairs.choices import AuditSource
from hapairs.roles import ADMIN, OPERATOR, role_of
from hapairs.services._common import ServiceError
from hapairs.services.tokens import SCOPES, api_token_issue, api_token_revoke


class Command(BaseCommand):
    help = (
        "Issue an API token for USER and print it on the last line (send it as "
        "'Authorization: Bearer TOKEN'). Issuing a new token revokes the user's previous one."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--revoke", action="store_true", help="revoke the user's token instead of issuing one")
        parser.add_argument(
            "--scope",
            choices=SCOPES,
            help="at most what the token may do (never more than the user's role): read, operate or admin; "
            "default: the user's role's (Monitor read, Operator operate, Admin admin)",
        )
        parser.add_argument("--expires-days", type=int, metavar="DAYS", help="the token stops working after DAYS days")
        parser.add_argument(
            "--networks", default="", metavar="CIDR[,CIDR...]", help="the only client addresses the token is taken from"
        )

    def handle(self, *args, username: str, revoke: bool, **options):
        # audited as the command line, by the account that ran it
        with audit_context(AuditSource.CLI, name=f"{_os_user()} (command line)"):
            self._handle(username, revoke, options)

    def _handle(self, username: str, revoke: bool, options: dict) -> None:
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
        scope = options.get("scope") or {ADMIN: "admin", OPERATOR: "operate"}.get(role or "", "read")
        networks = [net for net in (options.get("networks") or "").split(",") if net.strip()]
        try:
            token = api_token_issue(user=user, scope=scope, expires_days=options.get("expires_days"), networks=networks)
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"API token for {username} ({role or 'no role'}, scope {scope}); the previous token, if any, is revoked:"
        )
        self.stdout.write(token)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
