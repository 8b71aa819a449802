"""License upload, install and removal: the service, the API, VA activation, and end to end.

Every bad file gets the verifier's sentence and leaves no trace (no row, no event, no
job, nothing queued for the agent), through the service and through the API. The
end-to-end tests run a real agent farm and a real Celery worker.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone

from hapairs import agent_client, licenses, rules, selectors, services
from hapairs.choices import JobKind, JobStatus, LicenseStatus
from hapairs.licenses import LicenseSpec
from hapairs.models import Appliance, HAEvent, HAPair, Job, License, LicenseFile
from hapairs.services.licenses import license_installed_record, license_removed_record
from hapairs.tests.e2e import AgentFarm, Worker, node_toml, wait_for
from hapairs.tests.loopback import third_octet
from nodeagent import protocol

DEVKEYS = Path(__file__).resolve().parents[1] / "devkeys"
DEV_KEY = licenses.load_private_key((DEVKEYS / "dev_license_private.pem").read_bytes())
PORTAL_KEY = Ed25519PrivateKey.generate()  # the key this portal trusts in these tests
STRANGER_KEY = Ed25519PrivateKey.generate()  # a key it does not trust
MSE1_UDI = "AIR-MSE-VA-K9:V01:mse1_d5972642-5696-11e1-bd0c-0050568901d6"
MSE2_UDI = "AIR-MSE-VA-K9:V01:mse2_666f2046-5699-11e1-b1b1-0050568901d9"

CAS_100 = LicenseSpec("CAS_ELEMENTS", 100)
ACTIVATION_MSE1 = LicenseSpec("MSE_ACTIVATION", 1, host_udi=MSE1_UDI)
ACTIVATION_MSE2 = LicenseSpec("MSE_ACTIVATION", 1, host_udi=MSE2_UDI)


def issue(*specs: LicenseSpec, key: Ed25519PrivateKey = PORTAL_KEY, comment: str = "") -> bytes:
    return licenses.render_license_file(list(specs), key, comment=comment).encode("ascii")


def today():
    return timezone.localdate()


def _truncated() -> bytes:
    text = issue(CAS_100, LicenseSpec("MSAP_CLICKS", 1000)).decode()
    cut = text.index(" permanent", text.index("MSAP_CLICKS"))
    return text[:cut].encode()  # the download stopped in line 2, after "INCREMENT MSAP_CLICKS 7.0"


def _bad_signature() -> bytes:
    good = issue(CAS_100).decode()
    other = issue(LicenseSpec("CAS_ELEMENTS", 101)).decode()
    signature = other.rsplit("SIGN=", 1)[1].strip()
    return (good.rsplit("SIGN=", 1)[0] + "SIGN=" + signature + "\n").encode()  # a real signature, of another line


# name → (the file's bytes, the target appliance, a phrase of the sentence the operator reads)
BAD_FILES = {
    "empty": (lambda: b"", "mse2", "The license file is empty."),
    "only blanks": (lambda: b"  \n\t\n", "mse2", "The license file is empty."),
    "only comments": (lambda: b"# nothing here\n", "mse2", "holds no INCREMENT line"),
    "binary junk": (lambda: bytes(range(256)) * 4, "mse2", "not a text file (it contains binary data)"),
    "not UTF-8": (lambda: b"INCREMENT \xff\xfe CAS", "mse2", "not a text file (it is not valid UTF-8 text)"),
    "over the size limit": (lambda: b"#" * (licenses.MAX_BYTES + 1), "mse2", "the limit is 64 KiB (65,536 bytes)"),
    "truncated line": (_truncated, "mse2", "Line 2: the line is incomplete (the file may be truncated)"),
    "unknown feature": (
        lambda: issue(CAS_100).replace(b"CAS_ELEMENTS", b"CAS_ELEMENTZ"),
        "mse2",
        "unknown feature 'CAS_ELEMENTZ'",
    ),
    "missing signature": (
        lambda: issue(CAS_100).split(b" SIGN=")[0] + b"\n",
        "mse2",
        "CAS_ELEMENTS: the line has no signature (SIGN=...); it cannot be trusted.",
    ),
    "damaged signature": (
        lambda: issue(CAS_100).replace(b"SIGN=", b"SIGN=AAAA")[:-10] + b"\n",
        "mse2",
        "the signature is damaged or truncated",
    ),
    "bad signature": (_bad_signature, "mse2", "CAS_ELEMENTS: the signature does not match this line"),
    "count changed after signing": (
        lambda: issue(CAS_100).replace(b" 100 ", b" 1000 "),
        "mse2",
        "the signature does not match this line: a field (such as the count) was changed after signing",
    ),
    "signed by an untrusted key": (
        lambda: issue(CAS_100, key=STRANGER_KEY),
        "mse2",
        "or the file was signed by a key this portal does not trust",
    ),
    "signed with the development key": (
        lambda: issue(CAS_100, key=DEV_KEY),
        "mse2",
        "signed with the development key, which this portal refuses",
    ),
    "bound to another UDI": (
        lambda: issue(ACTIVATION_MSE2),
        "mse1",
        f"MSE_ACTIVATION: this license is bound to another appliance ({MSE2_UDI}), not to mse1 ({MSE1_UDI}).",
    ),
    "expired": (
        lambda: issue(LicenseSpec("MSAP_CLICKS", 5, expires_on=today() - timedelta(days=1), is_evaluation=True)),
        "mse2",
        "MSAP_CLICKS: this evaluation license expired on ",  # yesterday
    ),
    "the same line twice": (
        lambda: issue(CAS_100) + issue(CAS_100),
        "mse2",
        "Line 2: CAS_ELEMENTS: the same license appears twice (first on line 1).",
    ),
    "activation for a physical appliance": (
        lambda: issue(LicenseSpec("MSE_ACTIVATION", 1, host_udi="AIR-MSE-3355-K9:V01:KQ45xx")),
        "mse3355",
        "mse3355 is a MSE-3355, which needs no activation license",
    ),
}


@pytest.fixture
def trusted_key(settings):
    """The portal trusts PORTAL_KEY only (DEBUG is off under pytest-django)."""
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = [licenses.public_key_b64(PORTAL_KEY.public_key())]
    return PORTAL_KEY


@pytest.fixture
def va_nodes(make_appliance, trusted_key):
    """The seed's VA 1:1 deployment: mse1 (primary) and mse2 (secondary), neither activated; and a 3355."""
    mse1 = make_appliance(
        name="mse1",
        device_type="VA-High",
        hm_ip="127.10.10.12",
        vip="127.10.10.11",
        vip_prefixlen=24,
        role="primary",
        udi=MSE1_UDI,
    )
    mse2 = make_appliance(name="mse2", device_type="VA-High", hm_ip="127.10.10.13", role="secondary", udi=MSE2_UDI)
    make_appliance(name="mse3355", device_type="3355", hm_ip="127.10.10.16", udi="AIR-MSE-3355-K9:V01:KQ45xx")
    return mse1, mse2


def trace() -> dict:
    """Everything an upload may leave behind."""
    return {
        "files": LicenseFile.objects.count(),
        "lines": License.objects.count(),
        "jobs": Job.objects.count(),
        "events": HAEvent.objects.count(),
    }


def token_for(user) -> str:
    out = io.StringIO()
    call_command("api_token", user.username, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


@pytest.fixture
def upload_api(client, operator_user):
    tokens = {"operator": token_for(operator_user)}

    def upload(data: bytes | None, appliance: str | None = "mse2", *, filename="license.lic", as_="operator", **extra):
        form = {}
        if data is not None:
            form["file"] = SimpleUploadedFile(filename, data, content_type="application/octet-stream")
        if appliance is not None:
            form["appliance"] = appliance
        return client.post("/api/v1/licenses", data=form, HTTP_AUTHORIZATION=f"Bearer {tokens[as_]}", **extra)

    upload.tokens = tokens
    return upload


# --- the service --------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_every_bad_file_is_refused_by_the_service_with_its_sentence_and_leaves_no_trace(
    case, va_nodes, django_capture_on_commit_callbacks
):
    make, target, sentence = BAD_FILES[case]
    appliance = Appliance.objects.get(name=target)
    before = trace()
    with django_capture_on_commit_callbacks() as queued, pytest.raises(services.ServiceError) as caught:
        services.license_upload(appliance=appliance, filename=f"{case}.lic", data=make())
    assert sentence in caught.value.message
    assert caught.value.field == "file" and caught.value.errors == {"file": [caught.value.message]}
    assert trace() == before
    assert queued == []  # no job queued, so nothing ever reaches the agent


@pytest.mark.django_db
def test_a_good_file_is_stored_verified_with_an_event_and_an_install_job_queued_on_commit(
    va_nodes, operator_user, django_capture_on_commit_callbacks
):
    _, mse2 = va_nodes
    data = issue(
        ACTIVATION_MSE2,
        CAS_100,
        LicenseSpec("WIPS_LOCAL_APS", 10, expires_on=today() + timedelta(days=60), is_evaluation=True),
        comment="for mse2",
    )
    with django_capture_on_commit_callbacks() as queued:
        stored, job = services.license_upload(
            appliance=mse2, filename="C:\\fakepath\\mse2.lic", data=data, by=operator_user, reason="activate"
        )
    assert (stored.filename, stored.appliance, stored.uploaded_by) == ("mse2.lic", mse2, operator_user)
    assert stored.content == data.decode() and len(stored.sha256) == 64
    rows = {row.feature: row for row in stored.licenses.all()}
    assert set(rows) == {"MSE_ACTIVATION", "CAS_ELEMENTS", "WIPS_LOCAL_APS"}
    assert all(row.status == LicenseStatus.VERIFIED and row.installed_on is None for row in rows.values())
    assert (rows["CAS_ELEMENTS"].count, rows["CAS_ELEMENTS"].host_udi, rows["CAS_ELEMENTS"].sku) == (
        100,
        "ANY",
        "L-CAS-ELEMENTS",
    )
    assert rows["WIPS_LOCAL_APS"].is_evaluation and rows["WIPS_LOCAL_APS"].expires_on == today() + timedelta(days=60)
    assert rows["MSE_ACTIVATION"].vendor_string == "SKU=L-MSE-7.0-K9"
    # the stored rows rebuild exactly what was signed
    assert {row.canonical for row in rows.values()} == {
        line.canonical
        for line in licenses.parse_and_verify(data, trusted_keys=[PORTAL_KEY.public_key()], today=today()).lines
    }
    assert (job.kind, job.status, job.appliance, job.pair, job.params) == (
        JobKind.INSTALL_LICENSE,
        JobStatus.PENDING,
        mse2,
        None,
        {"license_file": stored.pk},
    )
    event = HAEvent.objects.get(code="license_uploaded")
    assert event.appliance == mse2 and event.generated_by == "operator1"
    assert (
        "mse2.lic" in event.remarks and "MSE_ACTIVATION × 1" in event.remarks and "CAS_ELEMENTS × 100" in event.remarks
    )
    assert "WIPS_LOCAL_APS × 10 (evaluation until" in event.remarks
    assert len(queued) == 1  # the job, queued once the transaction committed


@pytest.mark.django_db
def test_the_same_file_twice_is_refused_and_leaves_no_trace(va_nodes, django_capture_on_commit_callbacks):
    _, mse2 = va_nodes
    data = issue(CAS_100)
    services.license_upload(appliance=mse2, filename="cas.lic", data=data)
    before = trace()
    with django_capture_on_commit_callbacks() as queued, pytest.raises(services.ServiceError) as caught:
        services.license_upload(appliance=mse2, filename="again.lic", data=data)
    assert caught.value.message.startswith("This license file was already uploaded for mse2 on ")
    assert "(as cas.lic)" in caught.value.message and caught.value.field == "file"
    assert trace() == before and queued == []


@pytest.mark.django_db
def test_a_file_repeating_a_line_the_appliance_holds_is_refused(va_nodes):
    _, mse2 = va_nodes
    services.license_upload(appliance=mse2, filename="cas.lic", data=issue(CAS_100))
    before = trace()
    # another file (other bytes) whose second line is the same signed CAS line
    data = issue(LicenseSpec("MSAP_CLICKS", 1000), CAS_100, comment="re-issued")
    with pytest.raises(services.ServiceError) as caught:
        services.license_upload(appliance=mse2, filename="bundle.lic", data=data)
    assert caught.value.message == (
        "Line 3: CAS_ELEMENTS: mse2 already holds this license (uploaded in cas.lic); "
        "the same license cannot be counted twice."
    )
    assert trace() == before
    # a different CAS license (another count) is a different license, and so is the same line on another appliance
    services.license_upload(appliance=mse2, filename="more.lic", data=issue(LicenseSpec("CAS_ELEMENTS", 50)))
    mse1 = Appliance.objects.get(name="mse1")
    services.license_upload(appliance=mse1, filename="bundle.lic", data=data)


@pytest.mark.django_db
def test_a_removed_line_may_be_uploaded_again_in_another_file(va_nodes):
    _, mse2 = va_nodes
    first, _ = services.license_upload(appliance=mse2, filename="cas.lic", data=issue(CAS_100))
    license_removed_record(license_file=first)
    again, _ = services.license_upload(appliance=mse2, filename="cas-again.lic", data=issue(CAS_100, comment="again"))
    assert again.licenses.get().status == LicenseStatus.VERIFIED


@pytest.mark.django_db
def test_an_appliance_whose_udi_is_unknown_takes_only_any_host_licenses(make_appliance, trusted_key):
    va = make_appliance(name="va-new", device_type="VA-Low", hm_ip="127.10.10.30", udi="")
    with pytest.raises(services.ServiceError, match="the target appliance's UDI is not known yet"):
        services.license_upload(
            appliance=va, filename="a.lic", data=issue(LicenseSpec("MSE_ACTIVATION", 1, host_udi=MSE2_UDI))
        )
    services.license_upload(appliance=va, filename="cas.lic", data=issue(CAS_100))


@pytest.mark.django_db
def test_with_debug_off_and_no_key_configured_nothing_is_accepted(va_nodes, settings):
    settings.DEBUG = False
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = ""
    with pytest.raises(services.ServiceError, match="No license public key is configured") as caught:
        services.license_upload(appliance=va_nodes[1], filename="a.lic", data=issue(CAS_100, key=DEV_KEY))
    assert caught.value.field == "file" and LicenseFile.objects.count() == 0


# --- VA activation --------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_activation_license_for_mse2_activates_it_and_the_rules_then_allow_pairing(va_nodes):
    mse1, mse2 = va_nodes
    # Given two VAs without activation: pairing is refused on the license field
    with pytest.raises(services.ServiceError) as caught:
        services.ha_pair_create(primary=mse1, secondary=mse2)
    assert "license_file" in caught.value.errors and "mse2 is not activated" in caught.value.message
    assert not selectors.appliance_is_activated(mse2)

    # When mse2's activation license is uploaded (install still pending)
    mse2_file = issue(ACTIVATION_MSE2, comment="mse2 activation")
    services.license_upload(appliance=mse2, filename="mse2-activation.lic", data=mse2_file)

    # Then mse2 counts as activated; mse1 still does not, and the rules say so about mse1 only
    assert selectors.appliance_is_activated(mse2) and not selectors.appliance_is_activated(mse1)
    violations = rules.validate_pairing(selectors.node_facts(mse1), selectors.node_facts(mse2))
    assert [(v.field, v.rule) for v in violations] == [(rules.F_PRIMARY, "va_activation")]

    # And the same file is refused for mse1: it is bound to mse2's UDI
    with pytest.raises(services.ServiceError) as caught:
        services.license_upload(appliance=mse1, filename="mse2-activation.lic", data=mse2_file)
    assert "bound to another appliance" in caught.value.message and f"not to mse1 ({MSE1_UDI})" in caught.value.message

    # Once mse1 has its own, the pair is allowed
    services.license_upload(appliance=mse1, filename="mse1-activation.lic", data=issue(ACTIVATION_MSE1))
    assert rules.validate_pairing(selectors.node_facts(mse1), selectors.node_facts(mse2)) == []
    pair = services.ha_pair_create(primary=mse1, secondary=mse2)
    assert HAPair.objects.get() == pair


@pytest.mark.django_db
def test_activation_counts_while_verified_or_installed_and_stops_when_removed_or_expired(va_nodes):
    _, mse2 = va_nodes
    stored, _ = services.license_upload(appliance=mse2, filename="a.lic", data=issue(ACTIVATION_MSE2))
    assert selectors.appliance_is_activated(mse2)
    assert license_installed_record(license_file=stored, agent_license_id="abc123") == 1
    row = stored.licenses.get()
    assert (row.status, row.installed_on) == (LicenseStatus.INSTALLED, mse2)
    assert selectors.appliance_is_activated(mse2)
    assert license_installed_record(license_file=stored, agent_license_id="abc123") == 0  # a re-run records nothing new
    assert HAEvent.objects.filter(code="license_installed").count() == 1
    License.objects.filter(pk=row.pk).update(expires_on=today() - timedelta(days=1))
    assert not selectors.appliance_is_activated(mse2)
    License.objects.filter(pk=row.pk).update(expires_on=today())  # valid through its last day
    assert selectors.appliance_is_activated(mse2)
    license_removed_record(license_file=stored)
    assert not selectors.appliance_is_activated(mse2)


@pytest.mark.django_db
def test_a_license_other_than_activation_does_not_activate(va_nodes):
    _, mse2 = va_nodes
    services.license_upload(appliance=mse2, filename="cas.lic", data=issue(CAS_100))
    assert not selectors.appliance_is_activated(mse2)


# --- removal -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_removal_waits_for_the_install_then_queues_one_job(va_nodes, operator_user):
    _, mse2 = va_nodes
    stored, install = services.license_upload(appliance=mse2, filename="a.lic", data=issue(ACTIVATION_MSE2))
    with pytest.raises(services.ServiceError, match=rf"Install license \(job #{install.pk}\) is pending on mse2"):
        services.license_remove(license_file=stored, by=operator_user)
    Job.objects.filter(pk=install.pk).update(status=JobStatus.SUCCEEDED)
    job = services.license_remove(license_file=stored, by=operator_user, reason="VA decommissioned")
    assert (job.kind, job.appliance, job.params, job.reason) == (
        JobKind.REMOVE_LICENSE,
        mse2,
        {"license_file": stored.pk},
        "VA decommissioned",
    )
    with pytest.raises(services.ServiceError, match="Remove license"):
        services.license_remove(license_file=stored)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    license_removed_record(license_file=stored, job=job)
    with pytest.raises(services.ServiceError, match="a.lic was already removed from mse2"):
        services.license_remove(license_file=stored)


# --- the demo fleet --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_demo_fleet_activates_its_vas_with_development_licenses_so_mse1_and_mse2_pair(settings):
    import ipaddress

    from nodeagent.config import load_fleet

    # Given make run's fleet, registered (as demo_fleet's first part does once the agents answer)
    settings.DEBUG = True
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = ""  # the development key, as on a development machine
    for node in load_fleet("fleet/demo.toml").nodes.values():
        services.appliance_create(
            name=node.name,
            device_type=node.device_type,
            hm_ip=node.hm_ip,
            version=node.version,
            password=node.password,
            role=node.role.value,
            vip=node.vip,
            udi=node.udi,
            vip_prefixlen=ipaddress.IPv4Network(f"0.0.0.0/{node.netmask}").prefixlen if node.vip else None,
        )
    vas = {"mse1", "mse2", "NicoMSE", "NicoMSE2"}
    assert set(Appliance.objects.filter(device_type__startswith="VA-").values_list("name", flat=True)) == vas

    # When demo_fleet runs
    out = io.StringIO()
    call_command("demo_fleet", wait=0, stdout=out)

    # Then every VA got an activation license bound to its own UDI, and every declared pair was made
    for name in vas:
        appliance = Appliance.objects.get(name=name)
        row = License.objects.get(source_file__appliance=appliance)
        assert (row.feature, row.host_udi, row.status) == ("MSE_ACTIVATION", appliance.udi, LicenseStatus.VERIFIED)
        assert selectors.appliance_is_activated(appliance)
        assert f"activating {name} (job #" in out.getvalue()
    assert Job.objects.filter(kind=JobKind.INSTALL_LICENSE).count() == 4
    assert "pairing mse1 → mse2" in out.getvalue() and "not paired" not in out.getvalue()
    assert HAPair.objects.filter(primary__name="mse1", secondary__name="mse2").exists()
    assert HAPair.objects.count() == 5

    # And running it again changes nothing
    before = trace()
    call_command("demo_fleet", wait=0, stdout=io.StringIO())
    assert trace() == before


# --- the API --------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_every_bad_file_is_refused_with_its_sentence_through_the_api_and_leaves_no_trace(case, va_nodes, upload_api):
    make, target, sentence = BAD_FILES[case]
    before = trace()
    response = upload_api(make(), target, filename=f"{case}.lic")
    too_large = case == "over the size limit"  # refused before it is read: 413, as HTTP says
    assert response.status_code == (413 if too_large else 422), response.content
    body = response.json()
    assert sentence in body["detail"]
    assert body.get("errors") == (None if too_large else {"file": [body["detail"]]})
    assert trace() == before


@pytest.mark.django_db
def test_a_duplicate_gets_422_through_the_api(va_nodes, upload_api):
    assert upload_api(issue(CAS_100)).status_code == 201
    before = trace()
    response = upload_api(issue(CAS_100))
    assert response.status_code == 422 and "already uploaded for mse2" in response.json()["detail"]
    assert trace() == before


@pytest.mark.django_db
def test_a_10_mb_file_gets_413_without_being_read(va_nodes, upload_api):
    before = trace()
    response = upload_api(b"INCREMENT " + b"x" * (10 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["detail"].startswith("The license file is 10,485,770 bytes; the limit is 64 KiB")
    assert trace() == before


@pytest.mark.django_db
def test_an_upload_through_the_api_answers_201_with_the_features_and_the_job(va_nodes, upload_api):
    response = upload_api(issue(ACTIVATION_MSE2, CAS_100), "mse2", filename="mse2.lic")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["filename"], body["appliance"], body["uploaded_by"]) == ("mse2.lic", "mse2", "operator1")
    assert [
        (f["feature"], f["label"], f["count"], f["status"])
        for f in sorted(body["licenses"], key=lambda f: f["feature"])
    ] == [
        ("CAS_ELEMENTS", "CAS Elements", 100, "verified"),
        ("MSE_ACTIVATION", "Activation", 1, "verified"),
    ]
    assert (body["job"]["kind"], body["job"]["status"], body["job"]["appliance"]) == (
        "install_license",
        "pending",
        "mse2",
    )
    assert Job.objects.get(pk=body["job"]["id"]).params == {"license_file": body["id"]}
    assert LicenseFile.objects.get(pk=body["id"]).uploaded_by.username == "operator1"


@pytest.mark.django_db
def test_the_list_shows_each_appliances_files_and_an_unknown_name_is_404(client, va_nodes, upload_api, monitor_user):
    assert upload_api(issue(ACTIVATION_MSE2), "mse2").status_code == 201
    assert upload_api(issue(ACTIVATION_MSE1), "mse1").status_code == 201
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token_for(monitor_user)}"}  # reading is for every role
    mse2_files = client.get("/api/v1/licenses?appliance=mse2", **auth).json()
    assert [(f["appliance"], [lic["host_udi"] for lic in f["licenses"]]) for f in mse2_files] == [("mse2", [MSE2_UDI])]
    assert len(client.get("/api/v1/licenses", **auth).json()) == 2
    response = client.get("/api/v1/licenses?appliance=nope", **auth)
    assert response.status_code == 404 and response.json()["detail"] == "No appliance named 'nope'."


@pytest.mark.django_db
def test_a_monitor_gets_403_and_nothing_is_stored(client, va_nodes, monitor_user):
    token = token_for(monitor_user)  # issuing it is recorded (an event) before the upload is tried
    before = trace()
    response = client.post(
        "/api/v1/licenses",
        data={"file": SimpleUploadedFile("a.lic", issue(ACTIVATION_MSE2)), "appliance": "mse2"},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "Your role (Monitor) may not upload licenses."
    assert trace() == before


@pytest.mark.django_db
def test_without_a_token_an_upload_is_401(client, va_nodes):
    response = client.post(
        "/api/v1/licenses", data={"file": SimpleUploadedFile("a.lic", issue(CAS_100)), "appliance": "mse2"}
    )
    assert response.status_code == 401 and LicenseFile.objects.count() == 0


@pytest.mark.django_db
def test_an_unknown_appliance_is_404(va_nodes, upload_api):
    response = upload_api(issue(CAS_100), "nope")
    assert response.status_code == 404 and response.json()["detail"] == "No appliance named 'nope'."
    assert LicenseFile.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "request_kwargs, phrase",
    [
        (
            {"data": '{"file": "INCREMENT", "appliance": "mse2"}', "content_type": "application/json"},
            "A license is uploaded as a file",
        ),
        ({"data": b"INCREMENT CAS_ELEMENTS", "content_type": "text/plain"}, "A license is uploaded as a file"),
        ({"data": "", "content_type": "application/x-www-form-urlencoded"}, "A license is uploaded as a file"),
        (
            {"data": b"--zz\r\nContent-Disposition: form-data; na", "content_type": "multipart/form-data; boundary=zz"},
            "Name the target appliance",
        ),
        ({"data": b"garbage", "content_type": "multipart/form-data"}, "could not be read as multipart/form-data"),
        (
            {"data": b"garbage", "content_type": "multipart/form-data; boundary="},
            "could not be read as multipart/form-data",
        ),
        ({"data": {"appliance": "mse2"}}, "No license file was attached"),
        ({"data": {"file": SimpleUploadedFile("a.lic", b"x")}}, "Name the target appliance"),
        (
            {"data": {"file": "INCREMENT CAS_ELEMENTS (a field, not a file)", "appliance": "mse2"}},
            "No license file was attached",
        ),
    ],
    ids=[
        "json",
        "text",
        "urlencoded-empty",
        "multipart-cut",
        "multipart-no-boundary",
        "multipart-empty-boundary",
        "missing-file",
        "missing-appliance",
        "file-as-text-field",
    ],
)
def test_requests_that_are_not_a_license_upload_get_400_never_500(client, va_nodes, upload_api, request_kwargs, phrase):
    before = trace()
    response = client.post(
        "/api/v1/licenses", HTTP_AUTHORIZATION=f"Bearer {upload_api.tokens['operator']}", **request_kwargs
    )
    assert response.status_code == 400, response.content
    assert phrase in response.json()["detail"]
    assert trace() == before


@pytest.mark.django_db
def test_removal_through_the_api(client, va_nodes, upload_api, monitor_user):
    body = upload_api(issue(CAS_100), "mse2").json()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {upload_api.tokens['operator']}"}
    response = client.delete(f"/api/v1/licenses/{body['id']}", **auth)
    assert response.status_code == 409 and "Install license" in response.json()["detail"]  # still installing
    Job.objects.filter(pk=body["job"]["id"]).update(status=JobStatus.SUCCEEDED)
    monitor = client.delete(f"/api/v1/licenses/{body['id']}", HTTP_AUTHORIZATION=f"Bearer {token_for(monitor_user)}")
    assert monitor.status_code == 403
    response = client.delete(f"/api/v1/licenses/{body['id']}?reason=returned", **auth)
    assert response.status_code == 202 and response.json()["kind"] == "remove_license"
    assert client.delete("/api/v1/licenses/999999", **auth).status_code == 404
    assert client.delete(f"/api/v1/licenses/{2**70}", **auth).status_code == 400
    assert client.delete("/api/v1/licenses/abc", **auth).status_code == 400


# --- end to end: a real agent, a real worker ------------------------------------------------------
_subnets = itertools.count(10 + os.getpid() % 150)  # per process: concurrent suites do not collide
E2E_UDI_1 = "AIR-MSE-VA-K9:V01:valic1_0d6a3c1e-5696-11e1-bd0c-0050568901d6"
E2E_UDI_2 = "AIR-MSE-VA-K9:V01:valic2_1e7b4d2f-5699-11e1-b1b1-0050568901d9"


@pytest.fixture
def subnet():
    """127.71.x.0/24, fresh per test: no other test's agents live there."""
    return f"127.71.{third_octet(_subnets)}"


@pytest.fixture
def start_worker(tmp_path):
    started = []

    def start():
        worker = Worker(
            tmp_path,
            {
                "MSEPORTAL_INGEST_URL": "",
                "MSEPORTAL_JOB_LEASE_SECONDS": "3",
                "MSEPORTAL_RESUME_SECONDS": "1",
                "MSEPORTAL_POLL_SECONDS": "2",
                "MSEPORTAL_HA_SYNC_TIMEOUT_SECONDS": "90",
            },
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def va_farm(tmp_path, subnet):
    p_ip, s_ip, vip = f"{subnet}.12", f"{subnet}.13", f"{subnet}.11"
    farm = AgentFarm(
        tmp_path,
        node_toml("valic1", "VA-High", "primary", p_ip, "pw-valic1", vip=vip, udi=E2E_UDI_1)
        + node_toml("valic2", "VA-High", "secondary", s_ip, "pw-valic2", udi=E2E_UDI_2),
        port=8001,
    ).start()
    yield {"primary": p_ip, "secondary": s_ip}
    farm.stop()


@pytest.fixture
def e2e_api(client, operator_user, admin_user_):
    tokens = {"operator": token_for(operator_user), "admin": token_for(admin_user_)}

    def call(method, path, *, as_="operator", **kwargs):
        if "json" in kwargs:
            kwargs = {"data": json.dumps(kwargs.pop("json")), "content_type": "application/json", **kwargs}
        return getattr(client, method)(f"/api/v1{path}", HTTP_AUTHORIZATION=f"Bearer {tokens[as_]}", **kwargs)

    return call


def wait_job(api, job_id, worker, *, timeout=60):
    def finished():
        body = api("get", f"/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    body = wait_for(finished, timeout=timeout, every=0.2, what=f"job {job_id}")
    assert body["status"] == "succeeded", (body["error"], worker.tail())
    return body


def agent_licenses(name: str) -> list[dict]:
    appliance = Appliance.objects.get(name=name)
    return agent_client.call(agent_client.target_for(appliance), "GET", protocol.PATH_LICENSES)["licenses"]


def add_appliance(api, name, ip, password):
    response = api("post", "/appliances", as_="admin", json={"name": name, "ip": ip, "password": password})
    assert response.status_code == 201, response.content
    assert response.json()["udi"] in (E2E_UDI_1, E2E_UDI_2)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_upload_job_installs_the_license_on_the_agent_and_removal_removes_it(
    va_farm, start_worker, e2e_api, trusted_key
):
    worker = start_worker()
    add_appliance(e2e_api, "valic1", va_farm["primary"], "pw-valic1")
    assert agent_licenses("valic1") == []

    # When the operator uploads valic1's activation license with 100 CAS elements
    data = issue(LicenseSpec("MSE_ACTIVATION", 1, host_udi=E2E_UDI_1), CAS_100)
    response = e2e_api(
        "post", "/licenses", data={"file": SimpleUploadedFile("valic1.lic", data), "appliance": "valic1"}
    )
    assert response.status_code == 201, response.content
    uploaded = response.json()
    body = wait_job(e2e_api, uploaded["job"]["id"], worker)
    assert body["steps_done"] == ["install_license"]

    # Then the agent holds it, and the portal records it installed there
    held = agent_licenses("valic1")
    assert [(lic["features"]) for lic in held] == [{"Activation": 1, "CAS Elements": 100}]
    stored = LicenseFile.objects.get(pk=uploaded["id"])
    assert stored.agent_license_id == held[0]["id"]
    assert {(row.status, row.installed_on.name) for row in stored.licenses.all()} == {
        (LicenseStatus.INSTALLED, "valic1")
    }
    assert selectors.appliance_is_activated(stored.appliance)
    assert HAEvent.objects.filter(code="license_installed", appliance__name="valic1").count() == 1

    # When the operator deletes it
    response = e2e_api("delete", f"/licenses/{uploaded['id']}?reason=decommissioned")
    assert response.status_code == 202, response.content
    body = wait_job(e2e_api, response.json()["id"], worker)
    assert body["steps_done"] == ["remove_license", "record_removed"]

    # Then the agent no longer holds it, the lines are kept as REMOVED, and the VA is no longer activated
    assert agent_licenses("valic1") == []
    assert {row.status for row in stored.licenses.all()} == {LicenseStatus.REMOVED}
    assert not selectors.appliance_is_activated(stored.appliance)
    listed = e2e_api("get", "/licenses?appliance=valic1").json()
    assert [lic["status"] for lic in listed[0]["licenses"]] == ["removed", "removed"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_va_pair_is_activated_and_configured_in_one_go(va_farm, start_worker, e2e_api, trusted_key):
    add_appliance(e2e_api, "valic1", va_farm["primary"], "pw-valic1")
    add_appliance(e2e_api, "valic2", va_farm["secondary"], "pw-valic2")
    # Given both VAs' activation licenses uploaded, their own install jobs withdrawn before
    # any worker ran (so only the configure job can install them)
    for name, udi in (("valic1", E2E_UDI_1), ("valic2", E2E_UDI_2)):
        data = issue(LicenseSpec("MSE_ACTIVATION", 1, host_udi=udi))
        response = e2e_api(
            "post", "/licenses", data={"file": SimpleUploadedFile(f"{name}.lic", data), "appliance": name}
        )
        assert response.status_code == 201, response.content
        assert services.job_cancel(job=Job.objects.get(pk=response.json()["job"]["id"]))
    assert License.objects.filter(status=LicenseStatus.VERIFIED).count() == 2

    # When the operator pairs them right away
    response = e2e_api(
        "post",
        "/appliances/valic1/ha",
        json={
            "secondary_name": "valic2",
            "secondary_ip": va_farm["secondary"],
            "secondary_password": "pw-valic2",
        },
    )
    assert response.status_code == 202, response.content
    worker = start_worker()
    body = wait_job(e2e_api, response.json()["id"], worker, timeout=120)

    # Then the configure job installed both licenses first, and the pair is Active
    assert body["steps_done"][0] == "install_licenses"
    assert [lic["features"] for lic in agent_licenses("valic1")] == [{"Activation": 1}]
    assert [lic["features"] for lic in agent_licenses("valic2")] == [{"Activation": 1}]
    assert set(License.objects.values_list("status", "installed_on__name")) == {
        (LicenseStatus.INSTALLED, "valic1"),
        (LicenseStatus.INSTALLED, "valic2"),
    }
    status = e2e_api("get", "/appliances/valic1/ha").json()
    assert status["status"] == "Active", status


# --- "Activate Secondary with License" on the configure screen: one check for live and Save --------
@pytest.mark.django_db
def test_the_live_check_and_the_save_refuse_a_file_that_cannot_activate_the_secondary_alike(va_nodes):
    mse1, _ = va_nodes
    services.license_upload(
        appliance=mse1, filename="mse1.lic", data=issue(ACTIVATION_MSE1)
    )  # the primary is activated
    typed = {"secondary_name": "mse2", "secondary_ip": "127.10.10.13"}
    before = trace()
    # When a file without an activation license comes with the pairing
    cas = ("cas.lic", issue(CAS_100))
    check = services.ha_configure_check(primary=mse1, activation_license=cas, **typed)
    with pytest.raises(services.ServiceError) as caught:
        services.ha_configure(primary=mse1, secondary_password="", activation_license=cas, **typed)
    # Then the live check and the Save refuse it with the same sentence, and nothing is stored
    expected = {
        "activation_license": ["This file holds no MSE_ACTIVATION license (L-MSE-7.0-K9); it cannot activate mse2."]
    }
    assert check.errors == expected and caught.value.errors == expected
    assert check.facts["activation"] == "Not Activated" and trace() == before
    # And with mse2's own activation license the same check finds nothing against the pairing
    good = services.ha_configure_check(primary=mse1, activation_license=("mse2.lic", issue(ACTIVATION_MSE2)), **typed)
    assert good.errors == {} and good.facts["activation"] == "Activated"
