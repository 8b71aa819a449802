"""Start the test OIDC provider: ``python -m hapairs.tests.oidcprovider.serve FOLDER PORT
REDIRECT_URI CLIENT_ID CLIENT_SECRET``. Makes its database, its users (``GROUPS`` below),
the portal's client, then serves on 127.0.0.1:PORT until killed."""

from __future__ import annotations

import os
import sys

USERS = {"ophelia": ("ophelia-pw-1", ["mse-operators"]), "mona": ("mona-pw-1", ["mse-monitors"])}
USERS["nobody"] = ("nobody-pw-1", ["sales"])


def main() -> None:
    folder, port, redirect_uri, client_id, client_secret = sys.argv[1:6]
    os.environ["OIDC_TEST_FOLDER"] = folder
    os.environ["DJANGO_SETTINGS_MODULE"] = "hapairs.tests.oidcprovider.settings"
    import django
    from django.core.management import call_command

    django.setup()
    from django.contrib.auth.models import Group, User
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0)
    for username, (password, groups) in USERS.items():
        user = User.objects.create_user(
            username, email=f"{username}@idp.test", password=password, first_name=username.title()
        )
        user.groups.set([Group.objects.get_or_create(name=name)[0] for name in groups])
    Application.objects.create(
        name="mseportal",
        client_id=client_id,
        client_secret=client_secret,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect_uri,
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=True,
    )
    call_command("runserver", f"127.0.0.1:{port}", use_reloader=False, use_threading=True, skip_checks=True)


if __name__ == "__main__":
    main()
