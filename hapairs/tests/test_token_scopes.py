"""API tokens' scopes, expiry and allowed networks (manage.py api_token --scope, --expires-days,
--networks), each enforced on the API and recorded in the audit trail."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from hapairs import services
from hapairs.models import ApiToken, AuditEntry

pytestmark = pytest.mark.django_db


def issue(username, *flags):
    out = io.StringIO()
    call_command("api_token", username, *flags, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


@pytest.fixture
def pair(make_appliance):
    primary = make_appliance(name="p1", device_type="3355", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    secondary = make_appliance(name="s1", device_type="3355", hm_ip="127.10.10.16")
    return services.ha_pair_create(primary=primary, secondary=secondary)


def call(client, token, method="get", path="/appliances", body=None):
    return getattr(client, method)(
        f"/api/v1{path}",
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_a_read_scoped_operator_token_reads_but_may_not_operate(client, operator_user, pair):
    token = issue("operator1", "--scope", "read")
    assert call(client, token).status_code == 200
    refused = call(client, token, "post", "/appliances/p1/ha/maintenance", {"on": True, "reason": "disk"})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "This API token's scope (read) may not change maintenance mode."
    # the same user with an operate token may
    token = issue("operator1", "--scope", "operate")
    assert (
        call(client, token, "post", "/appliances/p1/ha/maintenance", {"on": True, "reason": "disk"}).status_code == 200
    )


def test_a_scope_never_lifts_a_role(client, monitor_user, pair):
    token = issue("monitor1", "--scope", "admin")
    refused = call(client, token, "post", "/appliances/p1/ha/maintenance", {"on": True, "reason": "disk"})
    assert refused.status_code == 403 and "Your role (Monitor) may not" in refused.json()["detail"]


def test_an_expired_token_is_refused(client, operator_user):
    token = issue("operator1", "--expires-days", "1")
    assert call(client, token).status_code == 200
    ApiToken.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert call(client, token).status_code == 401


def test_a_token_is_taken_only_from_its_networks(client, operator_user):
    token = issue("operator1", "--networks", "127.0.0.0/8")
    assert call(client, token).status_code == 200  # the test client is 127.0.0.1
    token = issue("operator1", "--networks", "198.18.0.0/15,2001:db8::/32")
    assert call(client, token).status_code == 401


def test_each_token_change_is_audited_with_its_scope_expiry_and_networks(operator_user):
    issue("operator1", "--scope", "read", "--expires-days", "30", "--networks", "127.0.0.1/8")
    entry = AuditEntry.objects.get(action="token.issue")
    assert entry.after["scope"] == "read" and entry.after["allowed_networks"] == ["127.0.0.0/8"]
    assert entry.after["expires_at"].startswith(str(timezone.now().date() + dt.timedelta(days=30))[:7])
    assert entry.source == "cli"


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (("--networks", "not-a-network"), "Allowed networks"),
        (("--expires-days", "0"), "1 to 3650 days"),
    ],
)
def test_bad_flags_are_refused_and_change_nothing(operator_user, flags, complaint):
    first = issue("operator1")
    held = ApiToken.objects.get()
    with pytest.raises(CommandError, match=complaint):
        issue("operator1", *flags)
    assert ApiToken.objects.get().key_hash == held.key_hash
    assert services.api_token_user(first, "127.0.0.1") == operator_user
    assert AuditEntry.objects.filter(action="token.issue").count() == 1


def test_the_default_scope_is_the_users_role(operator_user, monitor_user):
    issue("operator1")
    issue("monitor1")
    assert dict(ApiToken.objects.values_list("user__username", "scope")) == {"operator1": "operate", "monitor1": "read"}


def test_a_read_scoped_admin_token_reads_the_audit_trail_but_adds_nothing(client, admin_user_):
    token = issue("admin1", "--scope", "read")
    assert call(client, token, path="/audit").status_code == 200
    refused = call(client, token, "post", "/appliances", {"name": "x", "ip": "127.0.0.9", "password": "p"})
    assert refused.status_code == 403 and "scope (read)" in refused.json()["detail"]
