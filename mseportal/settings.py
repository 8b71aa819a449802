"""mseportal settings: everything comes from the environment.

The defaults run on a machine with nothing installed (SQLite and Celery's filesystem
broker under ``var/``, mail kept in ``var/mail``). Production is ``DEBUG=0`` with
``SECRET_KEY`` and ``ALLOWED_HOSTS`` set; the README's configuration table lists every
variable read here.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab as _crontab
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue as _Queue

from mseportal.envconf import (
    ConfigError,
    broker_settings,
    email_settings,
    env_bool,
    env_emails,
    env_event_webhooks,
    env_http_url,
    env_int,
    env_list,
    env_name,
    env_networks,
    env_origins,
    env_path,
)
from mseportal.ssoconf import django_ldap_settings, ldap_settings, oidc_settings

BASE_DIR = Path(__file__).resolve().parent.parent
# A checkout keeps the project-level templates/ and static/ beside the packages; the
# mseportal wheel ships them inside this package (pyproject.toml, [tool.setuptools]).
_shipped = Path(__file__).resolve().parent
_templates_dir = _shipped / "templates" if (_shipped / "templates").is_dir() else BASE_DIR / "templates"
_static_dir = _shipped / "static" if (_shipped / "static").is_dir() else BASE_DIR / "static"
# Installed from the wheel, BASE_DIR is site-packages: nothing may be written there.
_INSTALLED = (_shipped / "templates").is_dir()
ENV = dict(os.environ)

try:
    if _INSTALLED and not (ENV.get("MSEPORTAL_VAR_DIR") or "").strip():
        raise ConfigError(
            "MSEPORTAL_VAR_DIR is not set: an installed portal keeps its files (SQLite, broker, "
            "mail, collected static files) outside site-packages, e.g. /var/lib/mseportal."
        )
    VAR_DIR = env_path(ENV, "MSEPORTAL_VAR_DIR", BASE_DIR / "var")
    # Where `collectstatic` puts the static files WhiteNoise serves (the checkout's staticfiles/;
    # installed, under the var folder).
    STATIC_ROOT = env_path(
        ENV, "MSEPORTAL_STATIC_ROOT", VAR_DIR / "staticfiles" if _INSTALLED else BASE_DIR / "staticfiles"
    )
    DEBUG = env_bool(ENV, "DEBUG", False)

    SECRET_KEY = ENV.get("SECRET_KEY", "")
    if not SECRET_KEY:
        if not DEBUG:
            raise ConfigError(
                "SECRET_KEY is not set. Set SECRET_KEY (and ALLOWED_HOSTS) for production, "
                "or DEBUG=1 for a development machine."
            )
        SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production-0123456789"
    SECRET_KEY_FALLBACKS = env_list(ENV, "SECRET_KEY_FALLBACKS", [])

    ALLOWED_HOSTS = env_list(ENV, "ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
    if not DEBUG and not ALLOWED_HOSTS:
        raise ConfigError("ALLOWED_HOSTS is not set: name the host names the portal answers to.")
    CSRF_TRUSTED_ORIGINS = env_origins(ENV, "CSRF_TRUSTED_ORIGINS")
    # Behind a TLS-terminating proxy (deploy/nginx-mseportal.conf) that sets X-Forwarded-Proto.
    # Django then trusts that header from every client: gunicorn must listen on loopback only.
    BEHIND_TLS_PROXY = env_bool(ENV, "SECURE_PROXY_SSL_HEADER", False)

    # Keys that encrypt appliance passwords at rest (Fernet keys, comma-separated; the
    # first encrypts, all decrypt, so keys rotate). Unset: one derived from SECRET_KEY.
    FIELD_ENCRYPTION_KEYS = env_list(ENV, "FIELD_ENCRYPTION_KEYS", [])

    _email = email_settings(ENV.get("EMAIL_URL"), sink_dir=VAR_DIR / "mail")
    _broker = broker_settings(ENV.get("CELERY_BROKER_URL"), var_dir=VAR_DIR)
    SECURE_SSL_REDIRECT = env_bool(ENV, "SECURE_SSL_REDIRECT", not DEBUG)
    SECURE_HSTS_SECONDS = env_int(ENV, "SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
    AGENT_PORT = env_int(ENV, "MSEPORTAL_AGENT_PORT", 8001, minimum=1)
    AGENT_TIMEOUT = float(env_int(ENV, "MSEPORTAL_AGENT_TIMEOUT", 5, minimum=1))
    # The only networks the portal sends agent requests to. Loopback by default: the
    # development fleet lives on 127.0.0.0/8; a deployment names its management network.
    JOB_LEASE_SECONDS = env_int(ENV, "MSEPORTAL_JOB_LEASE_SECONDS", 60, minimum=2)
    JOB_STEP_RETRIES = env_int(ENV, "MSEPORTAL_JOB_STEP_RETRIES", 5, minimum=1)
    # Crash tests only (honoured with DEBUG on): stall a worker after this job step.
    JOB_FAULT_PAUSE_AFTER_STEP = ENV.get("MSEPORTAL_FAULT_PAUSE_AFTER_STEP", "")
    # HA timings the portal hands the agents and waits for.
    HA_STABILISATION_SECONDS = env_int(ENV, "MSEPORTAL_HA_STABILISATION_SECONDS", 1800, minimum=0)
    HA_SYNC_TIMEOUT_SECONDS = env_int(ENV, "MSEPORTAL_HA_SYNC_TIMEOUT_SECONDS", 900, minimum=5)
    # a synchronisation with no progress for this long is "stuck" (the troubleshooting panel)
    SYNC_STALL_SECONDS = env_int(ENV, "MSEPORTAL_SYNC_STALL_SECONDS", 300, minimum=5)
    # an appliance whose clock is this far from the portal's is a trouble (drill timings,
    # and at 300 s its signed requests are refused); the poll rewrites an offset that moved this much
    CLOCK_SKEW_WARN_SECONDS = env_int(ENV, "MSEPORTAL_CLOCK_SKEW_WARN_SECONDS", 2, minimum=1)
    CLOCK_OFFSET_STEP_MS = env_int(ENV, "MSEPORTAL_CLOCK_OFFSET_STEP_MS", 250, minimum=1)
    HA_SWITCH_TIMEOUT_SECONDS = env_int(ENV, "MSEPORTAL_HA_SWITCH_TIMEOUT_SECONDS", 120, minimum=5)
    # Where agents push their events (set on each agent when a pair is configured).
    INGEST_URL = ENV.get("MSEPORTAL_INGEST_URL", "http://127.0.0.1:8000/api/v1/ingest/events")
    AGENT_ALLOWED_NETWORKS = env_networks(ENV, "MSEPORTAL_AGENT_NETWORKS", ["127.0.0.0/8"])
    # Who may scrape /metrics without a token (the Prometheus servers' networks). None by
    # default: behind the TLS proxy every client's address is the proxy's own.
    METRICS_NETWORKS = env_networks(ENV, "MSEPORTAL_METRICS_NETWORKS", [])
    # The Ed25519 public keys license files must be signed with (docs/licenses.md): base64
    # keys separated by commas or spaces, or PEM blocks. Empty: the development key, DEBUG only.
    MSEPORTAL_LICENSE_PUBLIC_KEYS = ENV.get("MSEPORTAL_LICENSE_PUBLIC_KEYS", "")
    # Alerts (failover, failback, split brain, unreachable node, failed job, expiring
    # license): e-mailed at once to these, at most one per kind per pair per interval,
    # and POSTed (HMAC-SHA256 signed) to the webhook when one is set.
    ALERT_RECIPIENTS = env_emails(ENV, "MSEPORTAL_ALERT_RECIPIENTS")
    ALERT_MIN_INTERVAL_SECONDS = env_int(ENV, "MSEPORTAL_ALERT_MIN_INTERVAL_SECONDS", 300, minimum=0)
    ALERT_WEBHOOK_URL = env_http_url(ENV, "MSEPORTAL_ALERT_WEBHOOK_URL")
    ALERT_WEBHOOK_SECRET = ENV.get("MSEPORTAL_ALERT_WEBHOOK_SECRET", "")
    if ALERT_WEBHOOK_URL and not ALERT_WEBHOOK_SECRET:
        raise ConfigError(
            "MSEPORTAL_ALERT_WEBHOOK_URL is set but MSEPORTAL_ALERT_WEBHOOK_SECRET is not: "
            "the webhook's POSTs are signed with it."
        )
    # Webhooks per event code (hapairs.services.webhooks): each event of those codes POSTed,
    # signed like the alert webhook (with MSEPORTAL_ALERT_WEBHOOK_SECRET).
    EVENT_WEBHOOKS = env_event_webhooks(ENV, "MSEPORTAL_EVENT_WEBHOOKS")
    if EVENT_WEBHOOKS and not ALERT_WEBHOOK_SECRET:
        raise ConfigError(
            "MSEPORTAL_EVENT_WEBHOOKS is set but MSEPORTAL_ALERT_WEBHOOK_SECRET is not: "
            "the webhooks' POSTs are signed with it."
        )
    # Renamed from MSEPORTAL_LICENCE_WARN_DAYS, still read when the new name is unset.
    LICENSE_WARN_DAYS = env_int(
        ENV, env_name(ENV, "MSEPORTAL_LICENSE_WARN_DAYS", "MSEPORTAL_LICENCE_WARN_DAYS"), 30, minimum=1
    )
    # Reports and alerts: failed sends are retried with backoff (this, doubling, 5 times).
    DELIVERY_RETRY_BACKOFF_SECONDS = env_int(ENV, "MSEPORTAL_DELIVERY_RETRY_BACKOFF_SECONDS", 30, minimum=1)
    # Single sign-on (mseportal.ssoconf, docs/sso.md): LDAP and OIDC, each optional; local
    # accounts (ModelBackend) stay for break-glass.
    MSEPORTAL_LDAP = ldap_settings(ENV)
    MSEPORTAL_OIDC = oidc_settings(ENV)
    _ldap_django = django_ldap_settings(MSEPORTAL_LDAP) if MSEPORTAL_LDAP else {}
except ConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None

AUTHENTICATION_BACKENDS = [
    *(["hapairs.sso.DirectoryBackend"] if MSEPORTAL_LDAP else []),
    *(["hapairs.sso.IdentityProviderBackend"] if MSEPORTAL_OIDC else []),
    "django.contrib.auth.backends.ModelBackend",
]
for _name, _value in {**_ldap_django, **{k: v for k, v in MSEPORTAL_OIDC.items() if k.startswith("OIDC_")}}.items():
    globals()[_name] = _value
# a refused OIDC sign-in lands back on the login page, which shows why (hapairs.sso's messages)
LOGIN_REDIRECT_URL_FAILURE = "/login/"

# The embedded defaults keep their files under var/: make the folders they need.
if not ENV.get("DATABASE_URL"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
if _broker["filesystem"]:
    for _key in ("data_folder_in", "processed_folder", "control_folder"):
        Path(_broker["broker_transport_options"][_key]).mkdir(parents=True, exist_ok=True)

DEFAULT_FROM_EMAIL = ENV.get("DEFAULT_FROM_EMAIL", "mseportal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
for _name, _value in _email.items():
    globals()[_name] = _value

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "ninja",
    "django_celery_beat",
    "hapairs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "mseportal.middleware.AuditContextMiddleware",
    "mseportal.middleware.LoginRequiredExceptApiMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "mseportal.urls"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [_templates_dir],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "hapairs.context_processors.dependencies",
            ],
        },
    },
]

WSGI_APPLICATION = "mseportal.wsgi.application"

# --- Database -------------------------------------------------------------------
_default_db_url = f"sqlite:///{VAR_DIR / 'mseportal.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        ENV.get("DATABASE_URL") or _default_db_url,
        conn_max_age=env_int(ENV, "DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat share one file: WAL lets readers run beside
    # a writer, IMMEDIATE transactions take the write lock up front (no deadlock on
    # upgrade), and the busy timeout waits for it instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so the end-to-end tests' worker process sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-mseportal.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- I18N / time ------------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = ENV.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [_static_dir]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
MEDIA_ROOT = VAR_DIR / "media"
if DEBUG:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it

# --- Security (production when DEBUG is off) ------------------------------------
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The health probe answers over plain HTTP too (a local monitor asking gunicorn directly).
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_AGE = env_int(ENV, "SESSION_COOKIE_AGE", 8 * 3600, minimum=60)

# --- Celery -----------------------------------------------------------------------
CELERY_BROKER_URL = _broker["broker_url"]
CELERY_BROKER_TRANSPORT_OPTIONS = _broker["broker_transport_options"]
CELERY_BROKER_IS_FILESYSTEM = _broker["filesystem"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-job leaves the message for another
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True  # job state lives in Job rows, not a result backend
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ALWAYS_EAGER = env_bool(ENV, "CELERY_TASK_ALWAYS_EAGER", False)
# The poll: every MSEPORTAL_POLL_SECONDS, one message per shard (hapairs.sharding), shard k's
# on queue "poll.k". Every worker consumes celery and refresh unless started with -Q, and
# the poll queues of the shards it owns (hapairs.sharding, Owners; mseportal.worker_steps):
# a worker started on any host (same Redis and PostgreSQL) takes its share within seconds,
# and the others hand it over without a restart. Refreshes after a push have a queue of
# their own, and the polls are sent last in priority (hapairs.tasks.POLL_PRIORITY).
# Give beat and every worker the same MSEPORTAL_POLL_SHARDS.
POLL_SECONDS = env_int(ENV, "MSEPORTAL_POLL_SECONDS", 10, minimum=1)
POLL_SHARDS = env_int(ENV, "MSEPORTAL_POLL_SHARDS", 16, minimum=1)
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = [
    _Queue(_name, routing_key=_name)
    for _name in ("celery", "refresh", *(f"poll.{_shard}" for _shard in range(POLL_SHARDS)))
]
CELERY_TASK_ROUTES = {"hapairs.tasks.appliances_refresh": {"queue": "refresh"}}
CELERY_BEAT_SCHEDULE = {
    "fleet-poll": {
        "task": "hapairs.tasks.fleet_poll",
        "schedule": float(POLL_SECONDS),
        "options": {"expire_seconds": POLL_SECONDS},  # a fan-out no worker started in time is dropped
    },
    "jobs-resume": {
        "task": "hapairs.tasks.jobs_resume",
        "schedule": float(env_int(ENV, "MSEPORTAL_RESUME_SECONDS", 15, minimum=1)),
    },
    "heartbeat-samples-prune": {"task": "hapairs.tasks.heartbeat_samples_prune", "schedule": 86400.0},
    "deliveries-resume": {"task": "hapairs.tasks.deliveries_resume", "schedule": 60.0},
    "drills-due": {"task": "hapairs.tasks.drills_due", "schedule": 60.0},
    "licenses-expiry-check": {
        "task": "hapairs.tasks.licenses_expiry_check",
        "schedule": _crontab(minute="0", hour="6"),
    },
}
# Beat reads its schedule from the database (django-celery-beat): the entries above are
# written there at start, and each ReportSchedule keeps its own PeriodicTask beside them.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
HEARTBEAT_KEEP_DAYS = env_int(ENV, "MSEPORTAL_HEARTBEAT_KEEP_DAYS", 30, minimum=1)

# --- Logging ------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": ENV.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
