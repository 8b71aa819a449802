"""Sending one delivery: Django's e-mail through the configured backend, or the alert
webhook (a POST signed with HMAC-SHA256). Called by ``tasks.delivery_send`` (and the
``send_health_report`` command), never inside a request or a transaction.

An attempt claims the row first (``services.delivery_claim``), so a message already sent
or being sent is never sent again. Failures are sorted: a refusal for good (SMTP 5xx, a
4xx from the webhook) fails the delivery at once; anything else (the server down, a
timeout, SMTP 4xx) raises ``DeliveryRetry`` for Celery to retry with backoff.

Webhook signature: ``X-Mseportal-Signature: sha256=<hex>`` is the HMAC-SHA256, keyed with
``MSEPORTAL_ALERT_WEBHOOK_SECRET``, of ``<X-Mseportal-Timestamp>.<body>`` (the Unix time,
a dot, the raw JSON body). Receivers recompute it, compare in constant time, and refuse
old timestamps; ``X-Mseportal-Delivery`` is the idempotency key.
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import time
import urllib.error
import urllib.request

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

from hapairs.choices import DeliveryChannel, DeliveryStatus
from hapairs.models import Delivery
from hapairs.services.deliveries import delivery_attempt_record, delivery_claim

WEBHOOK_TIMEOUT = 10
BACKOFF_MAX = 600


class DeliveryRetry(Exception):
    """This attempt failed in a way another attempt may not (Celery retries the task)."""


class DeliveryRefused(Exception):
    """The server refused the message for good; retrying would not help."""


def backoff_seconds(retries: int) -> int:
    """The wait before retry ``retries + 1``: Celery's exponential backoff, without jitter."""
    return min(BACKOFF_MAX, settings.DELIVERY_RETRY_BACKOFF_SECONDS * 2**retries)


def attempt(delivery_id: int, *, retries: int = 0, final: bool = False) -> str | None:
    """One attempt at a delivery. Returns its status after the attempt, or None when
    there was nothing to do (already sent, being sent by another worker, gone)."""
    delivery = delivery_claim(delivery_id=delivery_id)
    if delivery is None:
        return None
    try:
        if delivery.channel == DeliveryChannel.WEBHOOK:
            post_webhook(delivery)
        else:
            send_email(delivery)
    except DeliveryRefused as exc:
        return delivery_attempt_record(delivery=delivery, error=str(exc), final=True)
    except Exception as exc:  # the server down, a timeout, a 4xx: worth another go
        error = describe_error(exc)
        status = delivery_attempt_record(delivery=delivery, error=error, final=final, retry_in=backoff_seconds(retries))
        if status == DeliveryStatus.RETRYING:
            raise DeliveryRetry(error) from exc
        return status
    return delivery_attempt_record(delivery=delivery)


def message_id(delivery: Delivery) -> str:
    """Stable per delivery: a message sent again after a lost reply is the same message."""
    digest = hashlib.sha256(delivery.key.encode()).hexdigest()[:32]
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip(">") or "mseportal"
    return f"<{digest}.{delivery.pk}@{domain}>"


def email_message(delivery: Delivery) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        subject=delivery.subject,
        body=delivery.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(delivery.recipients),
        headers={"Message-ID": message_id(delivery), "X-Mseportal-Delivery": delivery.key},
    )
    if delivery.body_html:
        message.attach_alternative(delivery.body_html, "text/html")
    return message


def send_email(delivery: Delivery) -> None:
    try:
        sent = email_message(delivery).send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        refusal = "; ".join(f"{address}: {code} {_text(reply)}" for address, (code, reply) in exc.recipients.items())
        if codes and all(code >= 500 for code in codes):
            raise DeliveryRefused(f"The mail server refused every recipient: {refusal}") from None
        raise
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise DeliveryRefused(
                f"The mail server refused the message: {exc.smtp_code} {_text(exc.smtp_error)}"
            ) from None
        raise
    if not sent:
        raise RuntimeError("the mail backend sent nothing (no connection)")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None  # a redirect is answered as an error: configure the final URL


def post_webhook(delivery: Delivery) -> None:
    url = delivery.recipients[0]
    body = delivery.body_text.encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "mseportal-alerts",
            "X-Mseportal-Delivery": delivery.key,
            "X-Mseportal-Timestamp": timestamp,
            "X-Mseportal-Signature": f"sha256={sign(settings.ALERT_WEBHOOK_SECRET, timestamp, body)}",
        },
    )
    # No proxy from the environment and no redirects: the POST goes to the URL configured.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)
    try:
        with opener.open(request, timeout=WEBHOOK_TIMEOUT) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 500 and exc.code not in (408, 425, 429):
            raise DeliveryRefused(f"The webhook answered HTTP {exc.code} {exc.reason}.") from None
        raise


def describe_backend() -> str:
    backend = settings.EMAIL_BACKEND
    if backend.endswith("smtp.EmailBackend"):
        security = " (SSL)" if settings.EMAIL_USE_SSL else " (STARTTLS)" if settings.EMAIL_USE_TLS else ""
        return f"SMTP {settings.EMAIL_HOST}:{settings.EMAIL_PORT}{security}"
    if backend.endswith("filebased.EmailBackend"):
        return f"the file sink {settings.EMAIL_FILE_PATH} (no EMAIL_URL set)"
    if backend.endswith("console.EmailBackend"):
        return "the console"
    if backend.endswith("locmem.EmailBackend"):
        return "the in-memory outbox"
    return backend


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "Recipients refused: " + "; ".join(f"{a}: {c} {_text(r)}" for a, (c, r) in exc.recipients.items())
    if isinstance(exc, urllib.error.HTTPError):
        return f"The webhook answered HTTP {exc.code} {exc.reason}."
    if isinstance(exc, urllib.error.URLError):
        return f"The webhook is unreachable: {exc.reason}"
    where = ""
    if isinstance(exc, OSError) and settings.EMAIL_BACKEND.endswith("smtp.EmailBackend"):
        where = f" (mail server {settings.EMAIL_HOST}:{settings.EMAIL_PORT})"
    return f"{type(exc).__name__}: {exc}{where}"


def _text(reply) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
