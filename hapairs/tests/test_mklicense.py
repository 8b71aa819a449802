"""manage.py mklicense: issue signed license files, make key pairs, refuse bad flags."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from hapairs import licenses
from hapairs.licenses import LicenseError, parse_and_verify

REPO = Path(__file__).resolve().parents[2]
MSE1_UDI = "AIR-MSE-VA-K9:V01:mse1_d5972642-5696-11e1-bd0c-0050568901d6"
MSE2_UDI = "AIR-MSE-VA-K9:V01:mse2_666f2046-5699-11e1-b1b1-0050568901d9"


@pytest.fixture
def debug(settings):
    settings.DEBUG = True
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = []
    return settings


def mklicense(*args: str) -> str:
    out = io.StringIO()
    call_command("mklicense", *args, stdout=out)
    return out.getvalue()


def verify_dev(path: Path, **kwargs):
    """Verify with the keys the settings trust (the development key under DEBUG)."""
    return parse_and_verify(
        path.read_bytes(), trusted_keys=licenses.trusted_keys_from_settings(), today=date.today(), **kwargs
    )


def test_it_writes_a_signed_file_that_verifies(debug, tmp_path):
    out = tmp_path / "cas.lic"
    printed = mklicense(
        "--feature", "CAS_ELEMENTS", "--count", "100", "--host", "ANY", "--expires", "permanent", "--out", str(out)
    )
    assert printed.strip() == f"Wrote {out}: CAS_ELEMENTS x 100, bound to ANY."
    (line,) = verify_dev(out).lines
    assert (line.feature, line.count, line.host_udi, line.expires_on, line.is_evaluation, line.sku, line.version) == (
        "CAS_ELEMENTS",
        100,
        "ANY",
        None,
        False,
        "L-CAS-ELEMENTS",
        "7.0",
    )


def test_the_version_option_takes_the_old_spelling_too(debug, tmp_path):
    for option in ("--license-version", "--licence-version"):  # the option's name before the rename
        out = tmp_path / f"{option}.lic"
        mklicense(
            "--feature",
            "CAS_ELEMENTS",
            "--count",
            "1",
            "--host",
            "ANY",
            "--expires",
            "permanent",
            option,
            "8.0",
            "--out",
            str(out),
        )
        assert verify_dev(out).lines[0].version == "8.0"


def test_features_repeat_or_come_as_comma_lists(debug, tmp_path):
    out = tmp_path / "all.lic"
    mklicense(
        "--feature",
        "CAS_ELEMENTS,WIPS_MONITOR_APS",
        "--count",
        "100,10",
        "--feature",
        "WIPS_LOCAL_APS",
        "--count",
        "10",
        "--feature",
        "MSAP_CLICKS",
        "--count",
        "1000",
        "--host",
        MSE1_UDI,
        "--expires",
        "2099-12-31",
        "--out",
        str(out),
    )
    lines = verify_dev(out, host_udi=MSE1_UDI).lines
    assert [(each.feature, each.count, each.expires_on) for each in lines] == [
        ("CAS_ELEMENTS", 100, date(2099, 12, 31)),
        ("WIPS_MONITOR_APS", 10, date(2099, 12, 31)),
        ("WIPS_LOCAL_APS", 10, date(2099, 12, 31)),
        ("MSAP_CLICKS", 1000, date(2099, 12, 31)),
    ]


def test_an_evaluation_license_runs_sixty_days_by_default(debug, tmp_path):
    out = tmp_path / "eval.lic"
    mklicense("--feature", "WIPS_LOCAL_APS", "--count", "10", "--host", "ANY", "--evaluation", "--out", str(out))
    (line,) = verify_dev(out).lines
    assert line.is_evaluation and line.expires_on == date.today() + timedelta(days=60)
    assert line.days_left(date.today()) == 60
    assert "TYPE=evaluation" in out.read_text()


def test_an_activation_license_for_mse2_activates_mse2_and_refuses_mse1(debug, tmp_path):
    # given the activation license issued for VA mse2's UDI
    out = tmp_path / "mse2-activation.lic"
    mklicense(
        "--feature", "MSE_ACTIVATION", "--count", "1", "--host", MSE2_UDI, "--expires", "permanent", "--out", str(out)
    )
    # then it verifies for mse2, and activates it
    verified = verify_dev(out, host_udi=MSE2_UDI)
    assert verified.lines[0].sku == licenses.ACTIVATION_SKU == "L-MSE-7.0-K9"
    assert licenses.is_activated(verified.lines, date.today())
    # and the same file is refused for mse1
    with pytest.raises(LicenseError) as caught:
        verify_dev(out, host_udi=MSE1_UDI)
    assert str(caught.value) == (
        f"Line 2: MSE_ACTIVATION: this license is bound to another appliance ({MSE2_UDI}), not to {MSE1_UDI}."
    )
    with pytest.raises(LicenseError, match=r"not to mse1 \("):
        licenses.check_host(verified, MSE1_UDI, appliance="mse1")


GOOD = ["--feature", "CAS_ELEMENTS", "--count", "100", "--host", "ANY", "--expires", "permanent"]


def _with(flag: str, value: str | None) -> list[str]:
    """GOOD with one flag's value replaced (None: the flag removed)."""
    args = list(GOOD)
    if flag in args:
        at = args.index(flag)
        del args[at : at + 2]
    return args + ([flag, value] if value is not None else [])


@pytest.mark.parametrize(
    "args, message",
    [
        (_with("--feature", None), "Give at least one --feature NAME"),
        (_with("--feature", "CAS_ELEMENTS,MSAP_CLICKS"), "Give one --count per --feature: 2 feature(s), 1 count(s)."),
        (_with("--feature", "CAS"), "Unknown feature CAS; known features are MSE_ACTIVATION, CAS_ELEMENTS,"),
        (_with("--feature", "CAS_ELEMENTS,CAS_ELEMENTS") + ["--count", "5"], "A feature is given twice"),
        (_with("--count", "0"), "--count '0' for CAS_ELEMENTS is not a positive whole number."),
        (_with("--count", "-3"), "--count '-3' for CAS_ELEMENTS is not a positive whole number."),
        (_with("--count", "ten"), "--count 'ten' for CAS_ELEMENTS is not a positive whole number."),
        (_with("--count", "1234567890"), "is not a positive whole number."),
        (_with("--host", None), "Give --host UDI"),
        (_with("--host", "not a udi"), "HOSTID 'not a udi' is neither ANY nor a UDI"),
        (_with("--expires", None), "Give --expires permanent or --expires YYYY-MM-DD."),
        (
            _with("--expires", "2099-02-30"),
            "--expires '2099-02-30' is neither permanent nor a date written YYYY-MM-DD.",
        ),
        (_with("--expires", "31/12/2099"), "is neither permanent nor a date written YYYY-MM-DD."),
        (_with("--expires", "2001-01-01"), "--expires 2001-01-01 is in the past"),
        (GOOD + ["--evaluation"], "An evaluation license cannot be permanent"),
        (
            ["--feature", "MSE_ACTIVATION", "--count", "1", "--host", "ANY", "--expires", "permanent"],
            "this license must be bound to one appliance's UDI, not HOSTID=ANY.",
        ),
        (
            [
                "--feature",
                "MSE_ACTIVATION",
                "--count",
                "1",
                "--host",
                MSE2_UDI,
                "--expires",
                "permanent",
                "--sku",
                "L-X",
            ],
            "the SKU must be L-MSE-7.0-K9, not L-X.",
        ),
        (
            _with("--feature", "CAS_ELEMENTS,MSAP_CLICKS") + ["--count", "2", "--sku", "L-X"],
            "--sku applies to one feature only",
        ),
        (GOOD + ["--license-version", "seven"], "version 'seven' is not a version number"),
        (GOOD + ["--key", "/nonexistent/key.pem"], "Cannot read the key file /nonexistent/key.pem"),
        (GOOD + ["--generate-key", "/tmp/x"], "--generate-key makes a key pair only"),
        (GOOD + ["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_are_refused_and_write_nothing(debug, tmp_path, args, message):
    out = tmp_path / "refused.lic"
    with pytest.raises(CommandError) as caught:
        mklicense(*args, "--out", str(out))
    assert message in str(caught.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_missing_out_flag_is_refused(debug):
    with pytest.raises(CommandError, match=r"Give --out FILE"):
        mklicense(*GOOD)


def test_an_existing_file_is_kept_unless_forced(debug, tmp_path):
    out = tmp_path / "keep.lic"
    out.write_text("mine")
    with pytest.raises(CommandError, match="already exists; pass --force"):
        mklicense(*GOOD, "--out", str(out))
    assert out.read_text() == "mine"
    mklicense(*GOOD, "--out", str(out), "--force")
    assert verify_dev(out).lines[0].count == 100


def test_a_key_file_that_is_not_a_private_key_is_refused(debug, tmp_path):
    bad = tmp_path / "public.pem"
    bad.write_bytes((REPO / "hapairs" / "devkeys" / "dev_license_public.pem").read_bytes())
    with pytest.raises(CommandError, match="not an unencrypted PEM Ed25519 private key"):
        mklicense(*GOOD, "--out", str(tmp_path / "x.lic"), "--key", str(bad))
    assert not (tmp_path / "x.lic").exists()


def test_the_development_key_signs_only_with_debug_on(settings, tmp_path):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="The development key signs licenses only with DEBUG=1"):
        mklicense(*GOOD, "--out", str(tmp_path / "x.lic"))
    assert not (tmp_path / "x.lic").exists()


def test_a_generated_key_pair_signs_and_is_trusted_in_production(settings, tmp_path):
    # given a new key pair, made with DEBUG off
    settings.DEBUG = False
    printed = mklicense("--generate-key", str(tmp_path / "keys"))
    private, public = tmp_path / "keys" / "license_private.pem", tmp_path / "keys" / "license_public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    setting_line = printed.strip().splitlines()[-1]
    assert setting_line.startswith("Trust it on the portal with: MSEPORTAL_LICENSE_PUBLIC_KEYS=")
    # when a license is signed with it and the portal trusts the printed key
    out = tmp_path / "prod.lic"
    mklicense(*GOOD, "--out", str(out), "--key", str(private))
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = [setting_line.split("=", 1)[1]]
    # then it verifies, and the same key from the PEM file is the one printed
    assert verify_dev(out).lines[0].count == 100
    assert licenses.public_key_b64(licenses.load_public_key(public.read_text())) == setting_line.split("=", 1)[1]
    # and a file signed with the development key is refused there
    settings.DEBUG = True
    dev_file = tmp_path / "dev.lic"
    mklicense(*GOOD, "--out", str(dev_file))
    settings.DEBUG = False
    with pytest.raises(LicenseError, match="signed with the development key"):
        verify_dev(dev_file)


def test_generate_key_does_not_overwrite_a_key_pair(settings, tmp_path):
    mklicense("--generate-key", str(tmp_path))
    before = (tmp_path / "license_private.pem").read_bytes()
    with pytest.raises(CommandError, match="already exists; pass --force to replace the key pair"):
        mklicense("--generate-key", str(tmp_path))
    assert (tmp_path / "license_private.pem").read_bytes() == before


def _run(*args: str, debug: str = "1") -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBUG": debug, "PYTHONPATH": str(REPO)}
    if debug == "0":  # what production settings need to load at all
        env.update(SECRET_KEY="mklicense-test-secret-key-not-used-for-anything-else", ALLOWED_HOSTS="localhost")
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "mklicense", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_line_writes_a_file_and_exits_zero(debug, tmp_path):
    out = tmp_path / "cli.lic"
    done = _run(
        "--feature", "MSE_ACTIVATION", "--count", "1", "--host", MSE2_UDI, "--expires", "permanent", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert verify_dev(out, host_udi=MSE2_UDI).lines[0].feature == "MSE_ACTIVATION"


def test_the_command_line_refuses_bad_flags_with_a_non_zero_exit(tmp_path):
    out = tmp_path / "cli.lic"
    done = _run(
        "--feature", "CAS_ELEMENTS", "--count", "zero", "--host", "ANY", "--expires", "permanent", "--out", str(out)
    )
    assert done.returncode != 0
    assert "--count 'zero' for CAS_ELEMENTS is not a positive whole number." in done.stderr
    assert not out.exists()
    done = _run(*GOOD, "--out", str(out), debug="0")
    assert done.returncode != 0 and "only with DEBUG=1" in done.stderr and not out.exists()


def test_help_documents_how_to_give_several_features():
    done = _run("--help")
    assert done.returncode == 0
    assert "repeating --feature NAME --count N" in " ".join(done.stdout.split())
    assert "comma lists" in done.stdout
