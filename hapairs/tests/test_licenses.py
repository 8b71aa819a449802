"""hapairs.licenses: the file format, verification, every refusal, keys from settings, the summary."""

from __future__ import annotations

import base64
import hashlib
from datetime import date, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hapairs import licenses
from hapairs.choices import DeviceType
from hapairs.licenses import LicenseError, LicenseSpec, parse_and_verify

DEVKEYS = Path(__file__).resolve().parents[1] / "devkeys"
DEV_KEY = licenses.load_private_key((DEVKEYS / "dev_license_private.pem").read_bytes())
OTHER_KEY = Ed25519PrivateKey.generate()
TODAY = date(2026, 11, 25)
MSE1_UDI = "AIR-MSE-VA-K9:V01:mse1_d5972642-5696-11e1-bd0c-0050568901d6"
MSE2_UDI = "AIR-MSE-VA-K9:V01:mse2_666f2046-5699-11e1-b1b1-0050568901d9"


def issue(*specs: LicenseSpec, key: Ed25519PrivateKey = DEV_KEY, comment: str = "") -> bytes:
    return licenses.render_license_file(list(specs), key, comment=comment).encode("ascii")


def verify(data: bytes, *, keys=(DEV_KEY,), today: date = TODAY, **kwargs):
    return parse_and_verify(data, trusted_keys=[k.public_key() for k in keys], today=today, **kwargs)


def refusal(data: bytes, **kwargs) -> str:
    with pytest.raises(LicenseError) as caught:
        verify(data, **kwargs)
    return str(caught.value)


CAS_100 = LicenseSpec("CAS_ELEMENTS", 100)
ACTIVATION_MSE2 = LicenseSpec("MSE_ACTIVATION", 1, host_udi=MSE2_UDI)
VALID = issue(
    CAS_100,
    LicenseSpec("WIPS_MONITOR_APS", 10),
    LicenseSpec("WIPS_LOCAL_APS", 10, expires_on=date(2027, 1, 24), is_evaluation=True),
    comment="example",
)


# ------------------------------------------------------------------ the format
def test_a_valid_file_verifies_with_every_field_parsed():
    # given a file with two permanent lines and an evaluation line
    # when it is verified
    result = verify(VALID)
    # then every field comes back, typed, with the file's sha256 and text
    assert result.sha256 == hashlib.sha256(VALID).hexdigest()
    assert result.text == VALID.decode()
    assert [line.feature for line in result.lines] == ["CAS_ELEMENTS", "WIPS_MONITOR_APS", "WIPS_LOCAL_APS"]
    cas, _, local = result.lines
    assert (cas.line_no, cas.sku, cas.version, cas.count, cas.host_udi, cas.expires_on, cas.is_evaluation) == (
        2,
        "L-CAS-ELEMENTS",
        "7.0",
        100,
        "ANY",
        None,
        False,
    )
    assert (local.expires_on, local.is_evaluation, local.days_left(TODAY)) == (date(2027, 1, 24), True, 60)
    assert base64.b64decode(cas.signature) and cas.text.startswith("INCREMENT CAS_ELEMENTS 7.0 permanent 100 ")


def test_the_canonical_form_lists_every_field_in_a_fixed_order():
    assert (
        licenses.canonical_form(
            feature="MSE_ACTIVATION",
            version="7.0",
            expires_on=None,
            count=1,
            host_udi=MSE2_UDI,
            is_evaluation=False,
            vendor_string="SKU=L-MSE-7.0-K9",
        )
        == f'INCREMENT MSE_ACTIVATION 7.0 permanent 1 HOSTID={MSE2_UDI} TYPE=standard VENDOR_STRING="SKU=L-MSE-7.0-K9"'
    )
    assert (
        licenses.canonical_form(
            feature="CAS_ELEMENTS",
            version="7.0",
            expires_on=date(2027, 1, 2),
            count=5,
            host_udi="ANY",
            is_evaluation=True,
            vendor_string="SKU=X",
        )
        == 'INCREMENT CAS_ELEMENTS 7.0 2027-01-02 5 HOSTID=ANY TYPE=evaluation VENDOR_STRING="SKU=X"'
    )


def test_the_signature_covers_the_context_and_the_canonical_form():
    line = verify(issue(CAS_100)).lines[0]
    message = licenses.SIGNATURE_CONTEXT + line.canonical.encode()
    DEV_KEY.public_key().verify(base64.b64decode(line.signature), message)  # raises if not


def test_layout_is_free_but_the_fields_are_not():
    # given the signed line re-laid out: tabs, extra blanks, keyword fields reordered,
    # an unquoted vendor string, CRLF line ends, a BOM, comments and blank lines
    line = verify(issue(CAS_100)).lines[0]
    relaid = (
        "\ufeff# a comment\r\n\r\n   # indented comment\r\n"
        f"INCREMENT\tCAS_ELEMENTS   7.0 permanent  100 SIGN={line.signature}  VENDOR_STRING=SKU=L-CAS-ELEMENTS "
        "TYPE=standard HOSTID=ANY   \r\n"
    ).encode()
    # then it still verifies, to the same canonical line
    assert [each.canonical for each in verify(relaid).lines] == [line.canonical]


def test_type_standard_may_be_left_out():
    line = verify(issue(CAS_100)).lines[0]
    shorter = line.text.replace(" TYPE=standard", "")
    assert verify(shorter.encode()).lines[0].canonical == line.canonical


def test_a_line_may_continue_over_several_lines_with_a_backslash():
    line = verify(issue(CAS_100)).lines[0].text
    head, tail = line.split(" HOSTID=")
    vendor, sign = tail.split(" SIGN=")
    data = f"# one line in three\n{head} \\\n   HOSTID={vendor} \\\n\tSIGN={sign}\n".encode()
    result = verify(data)
    assert result.lines[0].line_no == 2 and result.lines[0].count == 100


def test_a_continuation_at_the_end_of_the_file_is_a_truncated_line():
    line = verify(issue(CAS_100)).lines[0].text
    message = refusal((line.rsplit(" SIGN=", 1)[0] + " \\\n").encode())
    assert message == "Line 1: ends with '\\' at the end of the file: the file seems truncated."


def test_a_continuation_onto_a_blank_line_is_a_truncated_line():
    line = verify(issue(CAS_100)).lines[0].text
    message = refusal((line.rsplit(" SIGN=", 1)[0] + " \\\n\nINCREMENT X\n").encode())
    assert "ends with '\\' but the next line is blank or a comment" in message


# ------------------------------------------------------------------ every refusal has its sentence
def test_an_empty_file_is_refused():
    assert refusal(b"") == "The license file is empty."
    assert refusal(b" \n\r\n\t\n") == "The license file is empty."


def test_a_file_of_comments_only_is_refused():
    assert refusal(b"# nothing here\n\n") == "The license file holds no INCREMENT line (only comments or blank lines)."


def test_a_binary_file_is_refused():
    assert refusal(b"PK\x03\x04\x00\x00binary") == "The license file is not a text file (it contains binary data)."


def test_a_file_that_is_not_utf8_is_refused():
    assert refusal(b"INCREMENT \xff\xfe CAS") == "The license file is not a text file (it is not valid UTF-8 text)."


def test_a_file_with_control_characters_is_refused():
    assert "not a text file (it contains the control character U+0007)" in refusal(VALID + b"\x07")


def test_a_file_over_the_size_limit_is_refused_and_the_limit_is_stated():
    padded = VALID + b"#" * (licenses.MAX_BYTES - len(VALID))
    assert len(padded) == licenses.MAX_BYTES and verify(padded).lines  # exactly at the limit: accepted
    message = refusal(padded + b"#")
    assert message.startswith("The license file is 65,537 bytes; the limit is 64 KiB (65,536 bytes).")


def test_a_line_truncated_inside_the_signature_is_refused():
    cut = VALID.decode().splitlines()[1][:-20]
    assert refusal(cut.encode()) == (
        "Line 1: CAS_ELEMENTS: the signature is damaged or truncated: "
        "SIGN= must hold 88 base64 characters (an Ed25519 signature)."
    )


def test_a_line_truncated_before_its_fields_is_refused():
    message = refusal(b"INCREMENT CAS_ELEMENTS 7.0 perma")
    assert message.startswith("Line 1: the line is incomplete (the file may be truncated): expected INCREMENT FEATURE")


def test_a_line_truncated_inside_a_quoted_value_is_refused():
    line = VALID.decode().splitlines()[1]
    cut = line[: line.index("SKU=") + 6]
    assert (
        refusal(cut.encode()) == "Line 1: the quoted value of VENDOR_STRING is never closed: the line seems truncated."
    )


def test_an_unknown_feature_is_refused():
    tampered = VALID.replace(b"INCREMENT CAS_ELEMENTS", b"INCREMENT CAS_ELEMENTZ")
    assert refusal(tampered) == (
        "Line 2: unknown feature 'CAS_ELEMENTZ'; known features are "
        "MSE_ACTIVATION, CAS_ELEMENTS, WIPS_MONITOR_APS, WIPS_LOCAL_APS, MSAP_CLICKS."
    )


def test_a_line_without_signature_is_refused():
    line = VALID.decode().splitlines()[1].rsplit(" SIGN=", 1)[0]
    assert refusal(line.encode()) == "Line 1: CAS_ELEMENTS: the line has no signature (SIGN=...); it cannot be trusted."
    assert "has no signature" in refusal((line + " SIGN=").encode())


def test_a_signature_that_is_not_base64_is_refused():
    line = VALID.decode().splitlines()[1]
    garbled = line.rsplit("SIGN=", 1)[0] + "SIGN=" + "*" * 88
    assert "the signature is damaged or truncated" in refusal(garbled.encode())


def test_a_signature_of_another_line_is_refused():
    lines = VALID.decode().splitlines()
    swapped = lines[1].rsplit("SIGN=", 1)[0] + "SIGN=" + lines[2].rsplit("SIGN=", 1)[1]
    assert refusal(swapped.encode()).startswith("Line 1: CAS_ELEMENTS: the signature does not match this line")


def test_a_count_changed_after_signing_is_refused():
    tampered = VALID.replace(b" permanent 100 ", b" permanent 900 ")
    assert tampered != VALID
    assert refusal(tampered) == (
        "Line 2: CAS_ELEMENTS: the signature does not match this line: a field (such as the count) was changed "
        "after signing, or the file was signed by a key this portal does not trust."
    )


@pytest.mark.parametrize(
    "old, new",
    [
        (b" 7.0 permanent 100 ", b" 7.1 permanent 100 "),  # version
        (b" 7.0 permanent 100 ", b" 7.0 2099-01-01 100 "),  # expiry
        (b'HOSTID=ANY TYPE=standard VENDOR_STRING="SKU=L-CAS', b'HOSTID=ANY TYPE=evaluation VENDOR_STRING="SKU=L-CAS'),
        (b"SKU=L-CAS-ELEMENTS", b"SKU=L-CAS-ELEMENTX"),
        (
            b'HOSTID=ANY TYPE=standard VENDOR_STRING="SKU=L-CAS',
            b'HOSTID=X:V01:Y TYPE=standard VENDOR_STRING="SKU=L-CAS',
        ),
    ],
)
def test_changing_any_other_field_breaks_the_signature(old, new):
    data = issue(CAS_100)
    assert old in data
    tampered = data.replace(old, new, 1)
    if b"evaluation" in new:  # an evaluation must carry a date: give it one, it is still tampering
        tampered = tampered.replace(b" permanent ", b" 2027-01-01 ")
    assert "the signature does not match this line" in refusal(tampered)


def test_a_file_signed_by_an_untrusted_key_is_refused():
    assert "the signature does not match this line" in refusal(issue(CAS_100, key=OTHER_KEY))
    assert verify(issue(CAS_100, key=OTHER_KEY), keys=(OTHER_KEY,)).lines  # the same file, key trusted


def test_a_file_signed_with_the_development_key_says_so_when_that_key_is_not_trusted():
    assert refusal(issue(CAS_100), keys=(OTHER_KEY,)) == (
        "Line 1: CAS_ELEMENTS: signed with the development key, which this portal refuses "
        "(it is trusted only when DEBUG is on)."
    )


def test_no_trusted_key_refuses_everything():
    with pytest.raises(LicenseError, match="No trusted license public key"):
        parse_and_verify(VALID, trusted_keys=[], today=TODAY)


def test_a_license_bound_to_another_udi_is_refused():
    data = issue(ACTIVATION_MSE2)
    assert verify(data, host_udi=MSE2_UDI).lines[0].host_udi == MSE2_UDI
    assert refusal(data, host_udi=MSE1_UDI) == (
        f"Line 1: MSE_ACTIVATION: this license is bound to another appliance ({MSE2_UDI}), not to {MSE1_UDI}."
    )


def test_check_host_names_the_appliance_and_lets_any_fit_every_host():
    verified = verify(issue(CAS_100, ACTIVATION_MSE2))
    licenses.check_host(verified, MSE2_UDI, appliance="mse2")  # no error
    licenses.check_host(verify(issue(CAS_100)), MSE1_UDI)  # HOSTID=ANY fits anything
    with pytest.raises(LicenseError) as caught:
        licenses.check_host(verified, MSE1_UDI, appliance="mse1")
    assert str(caught.value).endswith(f"not to mse1 ({MSE1_UDI}).") and caught.value.line == 2
    with pytest.raises(LicenseError, match="UDI is not known yet"):
        licenses.check_host(verified, "", appliance="mse2")


def test_an_expired_license_is_refused_and_the_last_day_is_still_valid():
    data = issue(LicenseSpec("MSAP_CLICKS", 1000, expires_on=date(2026, 11, 24), is_evaluation=True))
    assert verify(data, today=date(2026, 11, 24)).lines[0].days_left(date(2026, 11, 24)) == 0
    assert refusal(data) == "Line 1: MSAP_CLICKS: this evaluation license expired on 2026-11-24."
    term = issue(LicenseSpec("MSAP_CLICKS", 1000, expires_on=date(2026, 1, 1)))
    assert refusal(term) == "Line 1: MSAP_CLICKS: this license expired on 2026-01-01."


@pytest.mark.parametrize("count", ["0", "-5", "ten", "1e3", "10.5", "1234567890", "+5", "0x10", "0100", "00"])
def test_a_count_that_is_not_a_positive_integer_is_refused(count):
    tampered = VALID.decode().replace(" permanent 100 ", f" permanent {count} ").encode()
    assert "CAS_ELEMENTS: count " in refusal(tampered)
    assert "is not a positive whole number (1 to 999,999,999)." in refusal(tampered)


@pytest.mark.parametrize("expiry", ["2026-13-01", "2026-02-30", "2026/12/01", "31-12-2026", "tomorrow", "0000-01-01"])
def test_a_malformed_date_is_refused(expiry):
    tampered = VALID.decode().replace(" permanent 100 ", f" {expiry} 100 ").encode()
    assert refusal(tampered) == (
        f"Line 2: CAS_ELEMENTS: expiry date '{expiry}' is malformed: write a date as YYYY-MM-DD, or permanent."
    )


def test_a_duplicate_line_is_refused():
    line = verify(issue(CAS_100)).lines[0].text
    data = f"{line}\n# again\n{line}\n".encode()
    assert refusal(data) == "Line 3: CAS_ELEMENTS: the same license appears twice (first on line 1)."


def test_the_same_feature_twice_with_different_counts_is_not_a_duplicate():
    result = verify(issue(CAS_100, LicenseSpec("CAS_ELEMENTS", 50)))
    assert [line.count for line in result.lines] == [100, 50]


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s.replace("INCREMENT", "FEATURE", 1), "expected an INCREMENT line, found 'FEATURE CAS_ELEMENTS"),
        (
            lambda s: s.replace(" HOSTID=ANY", " HOSTID=ANY FOO=1"),
            "unknown field FOO=; the fields are HOSTID=, TYPE=, VENDOR_STRING=, SIGN=.",
        ),
        (lambda s: s.replace(" HOSTID=ANY", " HOSTID=ANY HOSTID=ANY"), "HOSTID= appears twice."),
        (lambda s: s.replace(" HOSTID=ANY", ""), "HOSTID= is missing (a UDI, or ANY)."),
        (lambda s: s.replace(" HOSTID=ANY", " HOSTID=bad!udi"), "HOSTID 'bad!udi' is neither ANY nor a UDI"),
        (lambda s: s.replace("TYPE=standard", "TYPE=trial"), "TYPE 'trial' is neither standard nor evaluation."),
        (
            lambda s: s.replace("TYPE=standard", "TYPE=evaluation"),
            "an evaluation license must have an expiry date, not permanent.",
        ),
        (
            lambda s: s.replace(' VENDOR_STRING="SKU=L-CAS-ELEMENTS"', ""),
            'VENDOR_STRING= is missing (VENDOR_STRING="SKU=...").',
        ),
        (lambda s: s.replace('"SKU=L-CAS-ELEMENTS"', '"PART=L-CAS"'), "VENDOR_STRING has no valid SKU"),
        (lambda s: s.replace(" 7.0 ", " seven "), "version 'seven' is not a version number such as 7.0."),
        (
            lambda s: s.replace(" 100 ", " 100 stray "),
            "unexpected 'stray'; after the count only KEY=VALUE fields may follow.",
        ),
        (lambda s: s.replace("TYPE=standard", 'TYPE"x"'), "a double quote may only open a value"),
        (
            lambda s: s.replace('"SKU=L-CAS-ELEMENTS"', '"SKU=L-CAS-ELEMENTS"x'),
            "text follows the closing quote of VENDOR_STRING",
        ),
        (
            lambda s: s.replace("SKU=L-CAS-ELEMENTS", "SKU=L-CAS-ÉLÉMENTS"),
            "which a license line may not hold (ASCII only).",
        ),
    ],
)
def test_every_other_malformed_line_gets_its_own_sentence(edit, expected):
    line = verify(issue(CAS_100)).lines[0].text
    edited = edit(line)
    assert edited != line
    message = refusal(edited.encode())
    assert message.startswith("Line 1: ") and expected in message


def test_an_activation_license_must_name_its_host_and_carry_its_sku():
    line = verify(issue(ACTIVATION_MSE2)).lines[0].text
    assert "must be bound to one appliance's UDI, not HOSTID=ANY" in refusal(line.replace(MSE2_UDI, "ANY").encode())
    assert "the SKU must be L-MSE-7.0-K9, not L-MSE-8.0-K9" in refusal(line.replace("7.0-K9", "8.0-K9").encode())
    with pytest.raises(LicenseError, match="must be bound to one appliance's UDI"):
        licenses.sign_line(LicenseSpec("MSE_ACTIVATION", 1), DEV_KEY)


def test_the_error_carries_the_line_number():
    with pytest.raises(LicenseError) as caught:
        verify(VALID.replace(b" 10 HOSTID", b" 11 HOSTID", 1))
    assert caught.value.line == 3 and caught.value.message == str(caught.value)


# ------------------------------------------------------------------ keys
def test_the_shipped_development_key_pair_matches_the_constant():
    public = serialization.load_pem_public_key((DEVKEYS / "dev_license_public.pem").read_bytes())
    assert licenses.public_key_b64(public) == licenses.DEV_PUBLIC_KEY_B64
    assert licenses.public_key_b64(DEV_KEY.public_key()) == licenses.DEV_PUBLIC_KEY_B64
    assert licenses.is_dev_key(licenses.dev_public_key()) and not licenses.is_dev_key(OTHER_KEY.public_key())


def test_public_keys_load_from_pem_or_base64_and_garbage_is_refused():
    pem = OTHER_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b64 = licenses.public_key_b64(OTHER_KEY.public_key())
    for form in (pem, pem.decode(), b64, b64.encode(), OTHER_KEY.public_key()):
        assert licenses.public_key_b64(licenses.load_public_key(form)) == b64
    for bad in (
        "",
        "not-a-key",
        base64.b64encode(b"x" * 31).decode(),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ):
        with pytest.raises(LicenseError, match="is not an Ed25519 public key"):
            licenses.load_public_key(bad)
    with pytest.raises(LicenseError, match="not an unencrypted PEM Ed25519 private key"):
        licenses.load_private_key(pem)


def test_with_no_keys_configured_debug_trusts_the_development_key(settings):
    settings.DEBUG = True
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = []
    keys = licenses.trusted_keys_from_settings()
    assert [licenses.public_key_b64(k) for k in keys] == [licenses.DEV_PUBLIC_KEY_B64]
    assert parse_and_verify(VALID, trusted_keys=keys, today=TODAY).lines


def test_with_no_keys_configured_and_debug_off_nothing_verifies(settings):
    settings.DEBUG = False
    del settings.MSEPORTAL_LICENSE_PUBLIC_KEYS  # unset entirely: read with getattr(..., None)
    with pytest.raises(LicenseError) as caught:
        licenses.trusted_keys_from_settings()
    assert str(caught.value).startswith(
        "No license public key is configured, so no license can be verified: set MSEPORTAL_LICENSE_PUBLIC_KEYS"
    )


def test_with_debug_off_the_development_key_is_refused_even_when_listed(settings):
    settings.DEBUG = False
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = [
        licenses.public_key_b64(OTHER_KEY.public_key()),
        licenses.DEV_PUBLIC_KEY_B64,
    ]
    with pytest.raises(LicenseError) as caught:
        licenses.trusted_keys_from_settings()
    assert "lists the development public key (hapairs/devkeys/), which is refused when DEBUG is off" in str(
        caught.value
    )
    settings.DEBUG = True  # read at call time: the same list is fine on a development machine
    assert len(licenses.trusted_keys_from_settings()) == 2


def test_with_debug_off_own_keys_verify_and_dev_signed_files_are_refused(settings):
    settings.DEBUG = False
    pem = OTHER_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = [pem.decode()]
    keys = licenses.trusted_keys_from_settings()
    assert parse_and_verify(issue(CAS_100, key=OTHER_KEY), trusted_keys=keys, today=TODAY).lines
    with pytest.raises(LicenseError, match="signed with the development key, which this portal refuses"):
        parse_and_verify(issue(CAS_100), trusted_keys=keys, today=TODAY)


def test_the_key_setting_may_be_a_string_of_keys(settings):
    settings.DEBUG = False
    third = Ed25519PrivateKey.generate()
    b64s = [licenses.public_key_b64(k.public_key()) for k in (OTHER_KEY, third)]
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = f" {b64s[0]}, {b64s[1]}\n"
    assert [licenses.public_key_b64(k) for k in licenses.trusted_keys_from_settings()] == b64s


def test_a_bad_key_in_the_setting_is_named(settings):
    settings.DEBUG = False
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = [licenses.public_key_b64(OTHER_KEY.public_key()), "oops"]
    with pytest.raises(
        LicenseError, match=r"^MSEPORTAL_LICENSE_PUBLIC_KEYS entry 2: 'oops' is not an Ed25519 public key"
    ):
        licenses.trusted_keys_from_settings()


# ------------------------------------------------------------------ the summary
def test_the_summary_reproduces_the_seeds_va_example():
    # given the seed's licenses on a VA-Low (CAS Elements 100, wIPS 10 + 10, MSAP 1000)
    verified = verify(
        issue(
            ACTIVATION_MSE2,
            CAS_100,
            LicenseSpec("WIPS_MONITOR_APS", 10),
            LicenseSpec("WIPS_LOCAL_APS", 10),
            LicenseSpec("MSAP_CLICKS", 1000),
        )
    )
    rows = licenses.license_summary("VA-Low", verified.lines, TODAY)
    assert [(r.service, r.platform_limit, r.type, r.label, r.installed_limit) for r in rows] == [
        ("CAS", 2000, "Permanent", "CAS Elements", 100),
        ("wIPS", 2000, "Permanent", "wIPS Monitor Mode APs", 10),
        ("wIPS", 2000, "Permanent", "wIPS Local Mode APs", 10),
        ("MSAP", 2000, "Permanent", "Service Advertisement Clicks", 1000),
    ]
    assert licenses.is_activated(verified.lines, TODAY)


def test_the_summary_sums_permanent_lines_shows_evaluation_days_and_expired_stops_counting():
    lines = verify(
        issue(
            CAS_100,
            LicenseSpec("CAS_ELEMENTS", 50),
            LicenseSpec("CAS_ELEMENTS", 25, expires_on=TODAY + timedelta(days=60), is_evaluation=True),
            LicenseSpec("CAS_ELEMENTS", 7, expires_on=TODAY + timedelta(days=10)),
        )
    ).lines
    later = TODAY + timedelta(days=20)  # the 10-day term license has expired by then
    rows = licenses.license_summary("3355", lines, later)
    assert [(r.type, r.installed_limit, r.days_left, r.counts) for r in rows if r.service == "CAS"] == [
        ("Permanent", 150, None, True),
        ("Evaluation", 25, 40, True),
        ("Expired", 7, None, False),
    ]
    assert rows[0].platform_limit == licenses.PLATFORM_LIMITS["3355"]["CAS"]
    assert [(r.service, r.type, r.installed_limit) for r in rows if r.service != "CAS"] == [
        ("wIPS", "Not installed", 0),
        ("MSAP", "Not installed", 0),
    ]
    assert licenses.installed_counts(lines, later) == {"CAS_ELEMENTS": 175}
    assert licenses.installed_counts(lines, TODAY) == {"CAS_ELEMENTS": 182}


def test_a_dated_license_that_is_not_an_evaluation_is_a_term_license():
    lines = verify(issue(LicenseSpec("MSAP_CLICKS", 10, expires_on=TODAY + timedelta(days=3)))).lines
    (_, _, msap) = licenses.license_summary("VA-High", lines, TODAY)
    assert (msap.type, msap.days_left, msap.expires_on) == ("Term", 3, TODAY + timedelta(days=3))


def test_an_expired_activation_does_not_activate():
    lines = verify(
        issue(LicenseSpec("MSE_ACTIVATION", 1, host_udi=MSE2_UDI, expires_on=TODAY, is_evaluation=True))
    ).lines
    assert licenses.is_activated(lines, TODAY)
    assert not licenses.is_activated(lines, TODAY + timedelta(days=1))
    assert not licenses.is_activated([], TODAY)


def test_every_device_type_has_a_platform_limit_for_every_service():
    assert set(licenses.PLATFORM_LIMITS) == {choice.value for choice in DeviceType}
    for limits in licenses.PLATFORM_LIMITS.values():
        assert set(limits) == set(licenses.SERVICES) and all(v > 0 for v in limits.values())
    with pytest.raises(ValueError, match="unknown device type 'MSE-9999'"):
        licenses.license_summary("MSE-9999", [], TODAY)


def test_the_summary_takes_stored_rows_too():
    class Row:  # the attributes hapairs.models.License has
        def __init__(self, feature, count, expires_on=None, is_evaluation=False):
            self.feature, self.count, self.expires_on, self.is_evaluation = feature, count, expires_on, is_evaluation

    rows = licenses.license_summary("3310", [Row("WIPS_LOCAL_APS", 3), Row("WIPS_LOCAL_APS", 4)], TODAY)
    assert [(r.label, r.installed_limit) for r in rows if r.service == "wIPS"] == [("wIPS Local Mode APs", 7)]


# ------------------------------------------------------------------ issuing
def test_issuing_refuses_what_the_verifier_would_refuse():
    for spec in (
        LicenseSpec("NOPE", 1),
        LicenseSpec("CAS_ELEMENTS", 0),
        LicenseSpec("CAS_ELEMENTS", 1, host_udi="has space"),
        LicenseSpec("CAS_ELEMENTS", 1, is_evaluation=True),
        LicenseSpec("CAS_ELEMENTS", 1, version="x"),
    ):
        with pytest.raises(LicenseError):
            licenses.sign_line(spec, DEV_KEY)
    with pytest.raises(LicenseError, match="at least one feature"):
        licenses.render_license_file([], DEV_KEY)


# ------------------------------------------------------------------ never any other exception
def _outcome(data: bytes):
    try:
        return verify(data)
    except LicenseError as exc:
        assert str(exc)  # always a sentence
        return exc


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
@example(b"\xef\xbb\xbf")
@example(b"INCREMENT")
@example(b'INCREMENT "')
@example(b"INCREMENT CAS_ELEMENTS 7.0 permanent 1 =")
@example(b"\\")
def test_arbitrary_bytes_verify_or_raise_license_error(data):
    assert isinstance(_outcome(data), (licenses.VerifiedLicenseFile, LicenseError))


_LINEISH = st.text(
    alphabet=st.sampled_from(list('INCREMT_CASWPLO =" \\\t\n\r#0123456789.-:ANYHOSTIDSGVKU+/é\x00')), max_size=300
)


@hsettings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=1000), _LINEISH))
def test_arbitrary_text_verifies_or_raises_license_error(text):
    assert isinstance(_outcome(text.encode("utf-8", "surrogatepass")), (licenses.VerifiedLicenseFile, LicenseError))


@hsettings(max_examples=500, deadline=None)
@given(st.data())
def test_mutations_of_a_valid_file_verify_only_to_signed_licenses(data):
    # given a valid signed file, mutated by a few byte inserts, deletions or replacements
    mutated = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        at = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        byte = data.draw(st.one_of(st.sampled_from(list(b' \t\n\\"#=019AZaz+/-')), st.integers(0, 255)))
        if op == "insert":
            mutated.insert(at, byte)
        elif op == "delete" and mutated:
            del mutated[at]
        elif mutated:
            mutated[at] = byte
    # then it is refused with a LicenseError, or every line it yields is one that was signed
    # (lines are signed one by one, so a mutation may drop a line, e.g. by joining it to a comment)
    outcome = _outcome(bytes(mutated))
    if isinstance(outcome, licenses.VerifiedLicenseFile):
        original = [line.canonical for line in verify(VALID).lines]
        assert outcome.lines and all(line.canonical in original for line in outcome.lines)
    else:
        assert isinstance(outcome, LicenseError)


@hsettings(max_examples=200, deadline=None)
@given(st.integers(1, 999_999_999).filter(lambda n: n != 100))
def test_any_other_count_breaks_the_signature(count):
    tampered = VALID.replace(b" permanent 100 ", f" permanent {count} ".encode())
    assert "the signature does not match this line" in refusal(tampered)


# ------------------------------------------------------------------ the documentation
def test_the_example_in_the_documentation_verifies():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "licenses.md").read_text()
    example = doc.split("```license\n", 1)[1].split("\n```", 1)[0] + "\n"
    result = verify(example.encode(), host_udi=MSE2_UDI)
    assert [(each.feature, each.count, each.is_evaluation) for each in result.lines] == [
        ("MSE_ACTIVATION", 1, False),
        ("CAS_ELEMENTS", 100, False),
        ("WIPS_MONITOR_APS", 10, False),
        ("WIPS_LOCAL_APS", 10, True),
        ("MSAP_CLICKS", 1000, False),
    ]
    assert result.lines[3].line_no == 7 and result.lines[3].days_left(TODAY) == 60
    assert "expired on 2027-01-24" in refusal(example.encode(), today=date(2027, 1, 25))
