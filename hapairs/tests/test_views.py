"""Login everywhere, /healthz without it, roles as groups, the admin for every model."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from hapairs import roles, services
from hapairs.choices import EventCode
from hapairs.models import Appliance, HAEvent


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/admin/", "/admin/hapairs/appliance/", "/admin/hapairs/hapair/"])
def test_every_page_needs_a_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.django_db
def test_healthz_answers_without_login_with_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok"
    assert body["broker"]["status"] == "ok"


@pytest.mark.django_db
def test_healthz_reports_a_broken_broker_as_503(client, settings, tmp_path):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.CELERY_BROKER_IS_FILESYSTEM = False
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"]["status"] == "down"


@pytest.mark.django_db
def test_the_login_page_is_served(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Log in to mseportal" in response.content
    assert b"csrfmiddlewaretoken" in response.content


@pytest.mark.django_db
def test_roles_exist_with_the_security_models_permissions():
    admin, operator, monitor = (Group.objects.get(name=name) for name in roles.ROLES)
    codes = lambda g: set(g.permissions.values_list("codename", flat=True))  # noqa: E731
    assert "operate_hapair" in codes(operator) and "operate_hapair" in codes(admin)
    assert "operate_hapair" not in codes(monitor)
    assert {"view_appliance", "view_hapair", "view_haevent"} <= codes(monitor)
    assert not any(code.startswith(("add_", "change_", "delete_")) for code in codes(monitor))
    assert "add_appliance" in codes(admin) and "add_appliance" not in codes(operator)


@pytest.mark.django_db
def test_role_of(admin_user_, operator_user, monitor_user):
    assert [roles.role_of(u) for u in (admin_user_, operator_user, monitor_user)] == ["Admin", "Operator", "Monitor"]
    assert operator_user.has_perm(roles.OPERATE) and not monitor_user.has_perm(roles.OPERATE)


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["appliance", "hapair", "job", "haevent", "license", "licensefile"])
def test_the_admin_lists_every_model(client, admin_user_, make_appliance, model):
    make_appliance(name="mse1")
    client.force_login(admin_user_)
    response = client.get(f"/admin/hapairs/{model}/")
    assert response.status_code == 200


@pytest.mark.django_db
def test_the_monitor_cannot_reach_the_admin(client, monitor_user):
    client.force_login(monitor_user)
    assert client.get("/admin/hapairs/appliance/").status_code == 302  # not staff: back to admin login


@pytest.mark.django_db
def test_the_admin_never_shows_the_password_back(client, admin_user_, make_appliance):
    node = make_appliance(name="mse1", password="do-not-show-me")
    client.force_login(admin_user_)
    response = client.get(f"/admin/hapairs/appliance/{node.pk}/change/")
    assert response.status_code == 200
    assert b"do-not-show-me" not in response.content
    assert node.password_ciphertext.encode() not in response.content


@pytest.mark.django_db
def test_the_admin_adds_an_appliance_through_the_service_and_keeps_the_password_if_blank(client, admin_user_):
    client.force_login(admin_user_)
    form = {
        "name": "mse1",
        "device_type": "VA-Low",
        "version": "7.2.103.0",
        "udi": "",
        "role": "primary",
        "contact_name": "",
        "hm_ip": "127.10.10.12",
        "vip": "127.10.10.11",
        "vip_prefixlen": "24",
        "direct_connect": "",
        "username": "admin",
        "password": "first-pw",
    }
    response = client.post("/admin/hapairs/appliance/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    node = Appliance.objects.get(name="mse1")
    assert node.get_password() == "first-pw"
    assert node.events.filter(description="Mobility Services Engine added").exists()
    response = client.post(
        f"/admin/hapairs/appliance/{node.pk}/change/", {**form, "password": "", "contact_name": "NOC"}
    )
    assert response.status_code == 302
    node.refresh_from_db()
    assert node.contact_name == "NOC" and node.get_password() == "first-pw"


@pytest.mark.django_db
def test_the_admin_refuses_an_appliance_without_a_password(client, admin_user_):
    client.force_login(admin_user_)
    response = client.post(
        "/admin/hapairs/appliance/add/",
        {
            "name": "mse1",
            "device_type": "3355",
            "version": "7.2.103.0",
            "role": "none",
            "hm_ip": "127.10.10.12",
            "username": "admin",
        },
    )
    assert response.status_code == 200
    assert b"Enter the appliance&#x27;s password." in response.content
    assert not Appliance.objects.exists()


# --- the admin writes only through the services ----------------------------------------------------
@pytest.fixture
def paired(make_appliance):
    primary = make_appliance(name="p1", device_type="3355", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    secondary = make_appliance(name="s1", device_type="3355", hm_ip="127.10.10.16")
    return services.ha_pair_create(primary=primary, secondary=secondary)


@pytest.mark.django_db
def test_the_admin_cannot_change_a_paired_nodes_addresses_and_records_what_it_may_change(client, admin_user_, paired):
    primary = paired.primary
    client.force_login(admin_user_)
    page = client.get(f"/admin/hapairs/appliance/{primary.pk}/change/").content.decode()
    assert 'name="contact_name"' in page and 'name="password"' in page
    assert not any(f'name="{field}"' in page for field in ("name", "hm_ip", "vip", "vip_prefixlen", "device_type"))
    # When an Admin posts new addresses, a new identity, a contact and a new password
    response = client.post(
        f"/admin/hapairs/appliance/{primary.pk}/change/",
        {
            "name": "renamed",
            "device_type": "3310",
            "hm_ip": "127.10.10.99",
            "vip": "127.10.10.98",
            "vip_prefixlen": "16",
            "username": "root",
            "role": "secondary",
            "contact_name": "NOC Lyon",
            "password": "rotated-pw-1",
        },
    )
    # Then only the contact and the password change, each through its service with an event
    assert response.status_code == 302
    primary.refresh_from_db()
    assert (primary.name, primary.device_type, primary.hm_ip, primary.vip, primary.vip_prefixlen, primary.username) == (
        "p1",
        "3355",
        "127.10.10.15",
        "127.10.10.14",
        24,
        "admin",
    )
    assert primary.contact_name == "NOC Lyon" and primary.get_password() == "rotated-pw-1"
    events = {event.code: event for event in HAEvent.objects.filter(appliance=primary, generated_by="admin1")}
    assert set(events) == {EventCode.APPLIANCE_CHANGED, EventCode.APPLIANCE_PASSWORD_CHANGED}
    assert events[EventCode.APPLIANCE_CHANGED].remarks == "Contact name: “” → “NOC Lyon”."
    # And saving it again unchanged records nothing
    assert (
        client.post(
            f"/admin/hapairs/appliance/{primary.pk}/change/", {"contact_name": "NOC Lyon", "password": ""}
        ).status_code
        == 302
    )
    assert HAEvent.objects.filter(appliance=primary, generated_by="admin1").count() == 2


@pytest.mark.django_db
def test_the_admin_shows_a_pair_read_only_and_refuses_to_change_it(client, admin_user_, paired):
    client.force_login(admin_user_)
    page = client.get(f"/admin/hapairs/hapair/{paired.pk}/change/")
    assert page.status_code == 200
    assert 'name="failover_wait"' not in page.content.decode() and 'name="_save"' not in page.content.decode()
    events = HAEvent.objects.count()
    response = client.post(
        f"/admin/hapairs/hapair/{paired.pk}/change/",
        {"failover_type": "automatic", "failover_wait": "99", "maintenance": "on"},
    )
    assert response.status_code == 403
    paired.refresh_from_db()
    assert (paired.failover_type, paired.failover_wait, paired.maintenance) == ("manual", 10, False)
    assert HAEvent.objects.count() == events


@pytest.mark.django_db
def test_the_admin_cannot_delete_an_appliance_past_the_services_refusals(client, admin_user_, make_appliance):
    """An appliance is deleted on the MSE screens or through the API (refused while paired, a
    job runs, or license files are on record; an event says who and why), never by the admin."""
    node = make_appliance(name="mse1")
    client.force_login(admin_user_)
    assert client.get(f"/admin/hapairs/appliance/{node.pk}/delete/").status_code == 403
    response = client.post(f"/admin/hapairs/appliance/{node.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    response = client.post(
        "/admin/hapairs/appliance/", {"action": "delete_selected", "_selected_action": [node.pk], "post": "yes"}
    )
    assert Appliance.objects.filter(pk=node.pk).exists()
