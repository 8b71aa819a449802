"""``add_user``: production's first Admin (and later users), with a role and no demo password."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def test_add_user_creates_a_user_with_a_role_and_changes_an_existing_ones_role(monkeypatch):
    # a user with a role, the password from stdin (never an argument)
    monkeypatch.setattr("sys.stdin", io.StringIO("Long-Enough-Passw0rd\n"))
    call_command("add_user", "alice", role="Admin", password_stdin=True, stdout=io.StringIO())
    alice = get_user_model().objects.get(username="alice")
    assert alice.check_password("Long-Enough-Passw0rd") and alice.is_staff
    assert [g.name for g in alice.groups.all()] == ["Admin"]
    # an existing user's role changes, the password stays
    call_command("add_user", "alice", role="Monitor", stdout=io.StringIO())
    alice.refresh_from_db()
    assert [g.name for g in alice.groups.all()] == ["Monitor"] and not alice.is_staff
    assert alice.check_password("Long-Enough-Passw0rd")


@pytest.mark.parametrize(
    "username,password,complaint",
    [
        ("bob", "short\n", "too short"),
        ("bob", "\n", "empty password"),
        ("bad name!", "Long-Enough-Passw0rd\n", "valid"),
    ],
)
def test_add_user_refuses_bad_input_and_creates_nothing(monkeypatch, username, password, complaint):
    monkeypatch.setattr("sys.stdin", io.StringIO(password))
    with pytest.raises(CommandError, match=complaint):
        call_command("add_user", username, role="Operator", password_stdin=True)
    assert not get_user_model().objects.filter(username=username).exists()
