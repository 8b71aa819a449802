"""Reading configuration from environment variables.

Pure helpers (no Django import) so settings.py stays declarative and the parsing
is unit-tested. Every bad value raises ``ConfigError`` with the variable's name,
so a typo in a deployment fails at start-up with a sentence, not a traceback
deep inside Django.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration variable holds a value we cannot use."""


def env_bool(environ: dict[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off.")


def env_name(environ: dict[str, str], name: str, *old_names: str) -> str:
    """Which variable to read for a setting that was renamed: ``name`` when it is set, else
    the first of ``old_names`` that is (so a deployment configured under the old name keeps
    working), else ``name``. Errors then name the variable actually read."""
    for candidate in (name, *old_names):
        if (environ.get(candidate) or "").strip():
            return candidate
    return name


def env_int(environ: dict[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number.") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum of {minimum}.")
    return value


def env_list(environ: dict[str, str], name: str, default: list[str]) -> list[str]:
    raw = environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_origins(environ: dict[str, str], name: str) -> list[str]:
    """A comma-separated list of origins (``scheme://host[:port]``, no path), each checked."""
    origins = env_list(environ, name, [])
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            raise ConfigError(f"{name}: {origin!r} is not an origin such as https://mse.example.net.")
    return [origin.rstrip("/") for origin in origins]


def env_path(environ: dict[str, str], name: str, default: Path) -> Path:
    """A folder from the environment, made absolute; ``default`` when unset or empty."""
    raw = (environ.get(name) or "").strip()
    return Path(raw).expanduser().resolve() if raw else default


def env_networks(environ: dict[str, str], name: str, default: list[str]) -> list[str]:
    """A comma-separated list of IP networks (CIDR), each checked."""
    networks = env_list(environ, name, default)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {network!r} is not an IP network such as 127.0.0.0/8.") from None
    return [str(ipaddress.ip_network(n, strict=False)) for n in networks]


def email_settings(url: str | None, *, sink_dir: Path) -> dict[str, object]:
    """Translate ``EMAIL_URL`` into Django's EMAIL_* settings.

    Schemes:
      ``smtp://[user:pass@]host[:port]``         plain SMTP (port 25 by default)
      ``smtp+tls://…`` / ``submission://…``      SMTP with STARTTLS (port 587)
      ``smtps://…``                              SMTP over TLS (port 465)
      ``file:///absolute/dir``                   one file per message in that folder
      ``console://``                             print messages on standard output
      ``memory://``                              Django's in-memory outbox (tests)
    Unset: the file sink under ``var/mail``, which the portal can list for a newcomer.
    Options as a query string: ``?timeout=10&from=noc@example.com``.
    """
    if not url:
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(sink_dir),
        }
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    result: dict[str, object] = {}
    if "from" in query:
        result["DEFAULT_FROM_EMAIL"] = query["from"]
        result["SERVER_EMAIL"] = query["from"]
    if scheme in {"smtp", "smtp+tls", "submission", "smtps"}:
        if not parts.hostname:
            raise ConfigError(f"EMAIL_URL={url!r} names no host: use smtp://host:port.")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"EMAIL_URL={url!r} has a port that is not a number.") from None
        default_port = {"smtp": 25, "smtp+tls": 587, "submission": 587, "smtps": 465}[scheme]
        timeout = query.get("timeout", "10")
        try:
            timeout_seconds = float(timeout)
        except ValueError:
            raise ConfigError(f"EMAIL_URL timeout={timeout!r} is not a number of seconds.") from None
        result.update(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=parts.hostname,
            EMAIL_PORT=port or default_port,
            EMAIL_HOST_USER=unquote(parts.username or ""),
            EMAIL_HOST_PASSWORD=unquote(parts.password or ""),
            EMAIL_USE_TLS=scheme in {"smtp+tls", "submission"},
            EMAIL_USE_SSL=scheme == "smtps",
            EMAIL_TIMEOUT=timeout_seconds,
        )
        return result
    if scheme == "file":
        folder = unquote(parts.path)
        if not folder.startswith("/"):
            raise ConfigError(f"EMAIL_URL={url!r}: a file sink needs an absolute path (file:///var/mail).")
        result.update(
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=folder,
        )
        return result
    if scheme == "console":
        result["EMAIL_BACKEND"] = "django.core.mail.backends.console.EmailBackend"
        return result
    if scheme == "memory":
        result["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
        return result
    raise ConfigError(
        f"EMAIL_URL={url!r} has an unknown scheme {scheme!r}: use smtp, smtp+tls, smtps, file, console or memory."
    )


def broker_settings(url: str | None, *, var_dir: Path) -> dict[str, object]:
    """Celery broker settings: Redis (or any Kombu URL) when given, else the filesystem broker."""
    if url:
        scheme = urlsplit(url).scheme.lower()
        if not scheme:
            raise ConfigError(f"CELERY_BROKER_URL={url!r} is not a URL (redis://127.0.0.1:6379/0).")
        return {"broker_url": url, "broker_transport_options": {}, "filesystem": False}
    queue = var_dir / "broker" / "queue"
    processed = var_dir / "broker" / "processed"
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "control_folder": str(var_dir / "broker" / "control"),  # else Kombu writes ./control
            "store_processed": False,
            "polling_interval": 0.2,
        },
        "filesystem": True,
    }


def env_emails(environ: dict[str, str], name: str) -> list[str]:
    """A comma-separated list of e-mail addresses, each checked (empty when unset)."""
    addresses = env_list(environ, name, [])
    for address in addresses:
        if not re.fullmatch(r"[^@\s,;<>]+@[^@\s,;<>]+", address):
            raise ConfigError(f"{name}: {address!r} is not an e-mail address such as noc@example.net.")
    return addresses


def env_http_url(environ: dict[str, str], name: str) -> str:
    """An http(s) URL with a host, or empty when unset."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{name}={raw!r} is not an http:// or https:// URL with a host.")
    return raw


def env_event_webhooks(environ: dict[str, str], name: str) -> dict[str, list[str]]:
    """``code[,code…]=URL`` entries separated by ``;``: the event codes each webhook gets, as
    {code: [URL, …]}. The codes are checked against the portal's when the app starts."""
    raw = (environ.get(name) or "").strip()
    hooks: dict[str, list[str]] = {}
    for entry in filter(None, (part.strip() for part in raw.split(";"))):
        codes, sep, url = entry.partition("=")
        url = url.strip()
        parts = urlsplit(url)
        if not sep or not codes.strip() or parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(
                f"{name}: {entry!r} is not CODE[,CODE…]=URL with an http:// or https:// URL "
                "(e.g. failover_active,failback_complete=https://hooks.example.net/mse)."
            )
        for code in filter(None, (c.strip() for c in codes.split(","))):
            hooks.setdefault(code, []).append(url)
    return hooks
