"""Settings come from the environment; production passes Django's deploy checks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from mseportal.envconf import ConfigError, broker_settings, email_settings, env_bool, env_int, env_name

REPO = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "prod-" + "k3y-" * 15,
    "ALLOWED_HOSTS": "mseportal.example.net",
}


def run_manage(*args, env_overrides):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_passes_for_the_production_profile():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env_overrides=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_without_a_secret_key_refuses_to_start_with_a_sentence():
    result = run_manage("check", env_overrides={"DEBUG": "0", "ALLOWED_HOSTS": "x.example"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_a_bad_boolean_is_named():
    with pytest.raises(ConfigError, match="DEBUG='maybe'"):
        env_bool({"DEBUG": "maybe"}, "DEBUG", False)


def test_the_suite_uses_the_database_and_broker_the_environment_names():
    url = os.environ.get("DATABASE_URL", "")
    expected_vendor = "postgresql" if url.startswith(("postgres", "postgresql")) else "sqlite"
    assert connection.vendor == expected_vendor
    broker = os.environ.get("CELERY_BROKER_URL")
    assert settings.CELERY_BROKER_URL == (broker or "filesystem://")


@pytest.mark.parametrize(
    "url,expected",
    [
        (
            "smtp://mail.example.net:2525",
            {"EMAIL_HOST": "mail.example.net", "EMAIL_PORT": 2525, "EMAIL_USE_TLS": False},
        ),
        (
            "smtp+tls://u:p%40ss@mail.example.net",
            {"EMAIL_PORT": 587, "EMAIL_USE_TLS": True, "EMAIL_HOST_PASSWORD": "p@ss"},
        ),
        ("smtps://mail.example.net", {"EMAIL_PORT": 465, "EMAIL_USE_SSL": True}),
        (
            "smtp://127.0.0.1:1025?from=noc@example.net&timeout=3",
            {"DEFAULT_FROM_EMAIL": "noc@example.net", "EMAIL_TIMEOUT": 3.0},
        ),
        ("console://", {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}),
        ("file:///tmp/mails", {"EMAIL_FILE_PATH": "/tmp/mails"}),
    ],
)
def test_email_url_schemes(url, expected):
    result = email_settings(url, sink_dir=Path("/unused"))
    for key, value in expected.items():
        assert result[key] == value


@pytest.mark.parametrize("url", ["gopher://x", "smtp://", "smtp://host:notaport", "file://relative"])
def test_bad_email_urls_are_refused_with_the_variable_name(url):
    with pytest.raises(ConfigError, match="EMAIL_URL"):
        email_settings(url, sink_dir=Path("/unused"))


def test_no_email_url_keeps_mail_in_a_readable_sink(tmp_path):
    result = email_settings(None, sink_dir=tmp_path)
    assert result["EMAIL_BACKEND"].endswith("filebased.EmailBackend")
    assert result["EMAIL_FILE_PATH"] == str(tmp_path)


def test_no_broker_url_means_the_filesystem_broker_under_var(tmp_path):
    result = broker_settings(None, var_dir=tmp_path)
    assert result["broker_url"] == "filesystem://"
    assert result["broker_transport_options"]["data_folder_in"] == str(tmp_path / "broker" / "queue")
    assert broker_settings("redis://127.0.0.1:6379/0", var_dir=tmp_path)["broker_url"].startswith("redis://")


def fresh_settings(monkeypatch, **environ):
    """mseportal/settings.py run again, as a new process would, under ``environ``."""
    for name in ("MSEPORTAL_LICENSE_WARN_DAYS", "MSEPORTAL_LICENCE_WARN_DAYS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("fresh_settings", REPO / "mseportal" / "settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_renamed_variable_is_still_read_under_its_old_name_until_the_new_one_is_set(monkeypatch):
    assert fresh_settings(monkeypatch).LICENSE_WARN_DAYS == 30
    assert fresh_settings(monkeypatch, MSEPORTAL_LICENSE_WARN_DAYS="21").LICENSE_WARN_DAYS == 21
    # A deployment configured before the rename (the old British spelling) keeps its value.
    assert fresh_settings(monkeypatch, MSEPORTAL_LICENCE_WARN_DAYS="14").LICENSE_WARN_DAYS == 14
    both = fresh_settings(monkeypatch, MSEPORTAL_LICENSE_WARN_DAYS="21", MSEPORTAL_LICENCE_WARN_DAYS="14")
    assert both.LICENSE_WARN_DAYS == 21
    assert not hasattr(both, "LICENCE_WARN_DAYS")


def test_a_bad_value_under_the_old_name_is_refused_naming_the_old_name():
    environ = {"MSEPORTAL_LICENCE_WARN_DAYS": "soon"}
    assert (
        env_name(environ, "MSEPORTAL_LICENSE_WARN_DAYS", "MSEPORTAL_LICENCE_WARN_DAYS") == "MSEPORTAL_LICENCE_WARN_DAYS"
    )
    assert (
        env_name({"MSEPORTAL_LICENSE_WARN_DAYS": " "}, "MSEPORTAL_LICENSE_WARN_DAYS", "X")
        == "MSEPORTAL_LICENSE_WARN_DAYS"
    )
    with pytest.raises(ConfigError, match="MSEPORTAL_LICENCE_WARN_DAYS='soon'"):
        env_int(environ, env_name(environ, "MSEPORTAL_LICENSE_WARN_DAYS", "MSEPORTAL_LICENCE_WARN_DAYS"), 30)
