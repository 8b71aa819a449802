"""The production files in deploy/: systemd units, gunicorn's configuration (issue 12, item 2).

The units name the installed paths (/opt/mseportal/venv, /opt/mse-agent/venv), which a
checkout does not have; `systemd-analyze verify` checks that every ExecStart binary exists,
so it verifies copies whose venv paths point at this checkout's .venv instead.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
UNITS = (
    "mse-agent.service",
    "mse-witness.service",
    "mseportal-web.service",
    "mseportal-worker.service",
    "mseportal-beat.service",
)
# unit -> (user, environment file, state directory)
EXPECTED = {
    "mse-agent.service": ("mse-agent", "/etc/mse-agent/agent.env", "/var/lib/mse-agent"),
    "mse-witness.service": ("mse-agent", "/etc/mse-agent/witness.env", "/var/lib/mse-witness"),
    **{
        name: ("mseportal", "/etc/mseportal/portal.env", "/var/lib/mseportal")
        for name in ("mseportal-web.service", "mseportal-worker.service", "mseportal-beat.service")
    },
}
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string((DEPLOY / name).read_text())
    return parser


def test_systemd_analyze_verifies_every_unit(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd): the units are not verified")
    # given copies of the units whose venv binaries are this checkout's
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        for installed in ("/opt/mseportal/venv/bin/", "/opt/mse-agent/venv/bin/"):
            text = text.replace(installed, f"{VENV_BIN}/")
        (tmp_path / name).write_text(text)
        for binary in ("gunicorn", "celery", "mse-agent", "python"):
            if f"{VENV_BIN}/{binary}" in text:
                assert (VENV_BIN / binary).exists(), f"{name} runs {binary}, which .venv lacks (make venv)"
    # when systemd checks them
    r = subprocess.run(
        [tool, "verify", *(str(tmp_path / n) for n in UNITS)], capture_output=True, text=True, timeout=60
    )
    # then it finds nothing: no error, and no warning either (unknown keys only warn)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


@pytest.mark.parametrize("name", UNITS)
def test_each_unit_has_its_user_environment_file_restart_policy_and_hardening(name):
    service = unit(name)["Service"]
    user, env_file, state = EXPECTED[name]
    assert service["User"] == user
    assert service["EnvironmentFile"] == env_file
    assert service["Restart"] == "always"
    for key, value in HARDENING.items():
        assert service[key] == value, key
    assert service["ReadWritePaths"] == state and service["WorkingDirectory"] == state
    assert unit(name)["Install"]["WantedBy"] == "multi-user.target"


def test_only_the_agent_gets_network_capabilities():
    for name in UNITS:
        service = unit(name)["Service"]
        caps = (service.get("AmbientCapabilities", ""), service.get("CapabilityBoundingSet", ""))
        if name == "mse-agent.service":
            assert caps == ("CAP_NET_ADMIN CAP_NET_RAW",) * 2
        else:
            assert caps == ("", ""), f"{name} must hold no capability"


def test_the_users_and_example_environment_files_are_there_with_no_real_secret():
    users = (DEPLOY / "sysusers-mseportal.conf").read_text()
    assert "u mseportal " in users and "u mse-agent " in users
    portal = dict(
        line.split("=", 1) for line in (DEPLOY / "portal.env.example").read_text().splitlines() if line[:1].isupper()
    )
    assert portal["DEBUG"] == "0" and portal["SECRET_KEY"].startswith("replace-me")
    assert portal["SECURE_PROXY_SSL_HEADER"] == "1" and portal["MSEPORTAL_WEB_BIND"].startswith("127.0.0.1:")
    assert portal["MSEPORTAL_VAR_DIR"] == "/var/lib/mseportal"
    assert portal["MSEPORTAL_STATIC_ROOT"].startswith("/var/lib/mseportal/")
    assert "MSE_AGENT_LOG_LEVEL=" in (DEPLOY / "agent.env.example").read_text()
    witness = (DEPLOY / "witness.env.example").read_text()
    assert "MSE_WITNESS_LISTEN=" in witness and "MSE_WITNESS_PASSWORD=replace-me" in witness
    assert "--password" not in (DEPLOY / "mse-witness.service").read_text(), "the password stays off the command line"


def gunicorn_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    """gunicorn's own reading of deploy/gunicorn.conf.py under env (`--print-config`, which
    also loads the WSGI application: a development profile is enough for that)."""
    return subprocess.run(
        [str(VENV_BIN / "gunicorn"), "--config", str(DEPLOY / "gunicorn.conf.py"), "--print-config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "DEBUG": "1", "MSEPORTAL_VAR_DIR": os.environ["MSEPORTAL_VAR_DIR"], **env},
    )


def printed_settings(r: subprocess.CompletedProcess) -> dict[str, str]:
    pairs = (line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)
    return {key.strip(): value.strip() for key, value in pairs}


def test_gunicorn_config_reads_bind_and_workers_from_the_environment():
    # given no variable: loopback 8000, workers from the CPU count, the access log on stdout
    r = gunicorn_settings({})
    assert r.returncode == 0, r.stderr
    printed = printed_settings(r)
    assert printed["bind"] == "['127.0.0.1:8000']"
    assert printed["workers"] == str(min(2 * (os.cpu_count() or 1) + 1, 8))
    assert printed["accesslog"] == "-" and printed["timeout"] == "60"
    assert printed["forwarded_allow_ips"] == "['127.0.0.1', '::1']"
    assert printed["wsgi_app"] == "mseportal.wsgi:application" and printed["control_socket_disable"] == "True"
    # given both set
    r = gunicorn_settings({"MSEPORTAL_WEB_BIND": "127.0.0.9:8123", "MSEPORTAL_WEB_WORKERS": "3"})
    printed = printed_settings(r)
    assert printed["bind"] == "['127.0.0.9:8123']" and printed["workers"] == "3"
    # and a bad value is one sentence naming the variable
    r = gunicorn_settings({"MSEPORTAL_WEB_WORKERS": "many"})
    assert r.returncode != 0 and "MSEPORTAL_WEB_WORKERS='many' is not a whole number" in r.stderr


def test_trusted_origins_and_folders_from_the_environment_are_checked():
    from mseportal.envconf import ConfigError, env_origins, env_path

    assert env_origins({"O": "https://mse.example.net, https://10.0.0.5:8443/"}, "O") == [
        "https://mse.example.net",
        "https://10.0.0.5:8443",
    ]
    for bad in ("mse.example.net", "https://mse.example.net/portal", "ftp://mse.example.net"):
        with pytest.raises(ConfigError, match=r"^O: .* is not an origin such as https://mse.example.net\.$"):
            env_origins({"O": bad}, "O")
    assert env_path({}, "P", Path("/srv/x")) == Path("/srv/x") == env_path({"P": " "}, "P", Path("/srv/x"))
    assert env_path({"P": "/var/lib/mseportal/static"}, "P", Path("/x")) == Path("/var/lib/mseportal/static")
