"""gunicorn's configuration for the portal (``gunicorn --config deploy/gunicorn.conf.py mseportal.wsgi``).

Installed, this file is /etc/mseportal/gunicorn.conf.py (mseportal-web.service). Everything
it sets can be changed from the environment (the portal's EnvironmentFile):

  MSEPORTAL_WEB_BIND      where gunicorn listens (default 127.0.0.1:8000). Keep it on
                          loopback: the TLS proxy is the only client, and with
                          SECURE_PROXY_SSL_HEADER=1 Django believes X-Forwarded-Proto from
                          whoever connects.
  MSEPORTAL_WEB_WORKERS   worker processes (default 2 x CPUs + 1, at most 8)
  MSEPORTAL_WEB_THREADS   threads per worker (default 1)
  MSEPORTAL_WEB_TIMEOUT   seconds a request may take before its worker is restarted (default 60)
"""

from __future__ import annotations

import os

from mseportal.envconf import ConfigError, env_int

try:
    _workers = env_int(os.environ, "MSEPORTAL_WEB_WORKERS", min(2 * (os.cpu_count() or 1) + 1, 8), minimum=1)
    _threads = env_int(os.environ, "MSEPORTAL_WEB_THREADS", 1, minimum=1)
    _timeout = env_int(os.environ, "MSEPORTAL_WEB_TIMEOUT", 60, minimum=5)
except ConfigError as exc:
    raise SystemExit(f"gunicorn.conf.py: {exc}") from None

wsgi_app = "mseportal.wsgi:application"
bind = [item.strip() for item in os.environ.get("MSEPORTAL_WEB_BIND", "127.0.0.1:8000").split(",") if item.strip()]
workers = _workers
threads = _threads
# a page that takes longer than this is a stuck worker (agents are asked by the Celery
# workers, never inside a request); graceful restarts get the same time to finish
timeout = _timeout
graceful_timeout = _timeout
keepalive = 5  # the proxy keeps its upstream connections open
# a worker is replaced after this many requests (with jitter, so not all at once)
max_requests = 2000
max_requests_jitter = 200
# X-Forwarded-* are honoured only from the proxy on this machine
forwarded_allow_ips = "127.0.0.1,::1"
# the journal gets both logs (systemd reads stdout and stderr)
accesslog = "-"
errorlog = "-"
access_log_format = '%({x-forwarded-for}i)s %(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# no control socket under ~/.gunicorn: the service user has no home (ProtectHome=yes)
control_socket_disable = True
proc_name = "mseportal-web"
