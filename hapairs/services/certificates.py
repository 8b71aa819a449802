"""Appliances' TLS certificates: pinned at add (trust on first use, as SSH does), a changed
one refused and recorded, and an Admin's "trust the new certificate".

The pin is ``Appliance.tls_fingerprint``; every call to the agent goes to it
(``agent_client.target_for``). A different certificate is ``AgentCertificateChanged``:
whoever met it (the poller, a job) records it here, once per certificate, and the pages show
``selectors.certificate_problem``. Only an Admin's trust, checked against what the agent
presents now, moves the pin.
"""

from __future__ import annotations

import dataclasses

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from hapairs import agent_client
from hapairs.audit import audit_record, changed_only, snapshot
from hapairs.choices import EventCode, JobKind
from hapairs.crypto import SecretUnreadable
from hapairs.models import Appliance
from hapairs.selectors import certificate_problem, pair_for
from hapairs.services._common import PORTAL, ServiceError, actor_name, deadlock_retried, event_record, rows_lock
from hapairs.services.jobs import JobConflict, job_enqueue
from nodeagent import protocol, tlsid

PINNED_AFTER_UPGRADE = (
    "Pinned on first contact after upgrade (it was added before the portal pinned certificates): {fp}"
)


@transaction.atomic
def certificate_refused_record(*, hm_ip: str, presented: str) -> bool:
    """An agent presented ``presented`` instead of its pinned certificate: keep it on the
    appliance (the pages show why it is refused) and record an event, once per certificate.
    Returns whether this was news."""
    appliance = Appliance.objects.select_for_update().filter(hm_ip=hm_ip).first()
    if (
        appliance is None
        or not appliance.tls_fingerprint
        or presented in (appliance.tls_presented, appliance.tls_fingerprint)  # news of a pin trusted meanwhile
    ):
        return False
    appliance.tls_presented = presented
    appliance.save(update_fields=["tls_presented", "updated_at"])
    event_record(
        code=EventCode.CERTIFICATE_CHANGED,
        generated_by=PORTAL,
        appliance=appliance,
        pair=pair_for(appliance),
        remarks=certificate_problem(appliance),
    )
    return True


def certificate_pinned_record(*, appliance_id: int, seen: str) -> bool:
    """The upgrade path: an appliance recorded before pinning (no pin) answered over ``seen``:
    pin it now and say so. A conditional update: only a still-empty pin is filled."""
    if not Appliance.objects.filter(pk=appliance_id, tls_fingerprint="").update(tls_fingerprint=seen):
        return False
    appliance = Appliance.objects.only("pk", "name").get(pk=appliance_id)
    event_record(
        code=EventCode.CERTIFICATE_PINNED,
        generated_by=PORTAL,
        appliance=appliance,
        remarks=PINNED_AFTER_UPGRADE.format(fp=seen),
    )
    return True


def appliance_certificate_trust(
    *, appliance: Appliance, fingerprint: str, by: AbstractBaseUser | None = None
) -> Appliance:
    """Trust the certificate ``fingerprint`` for ``appliance`` (an Admin confirmed it): the
    agent is asked now, unpinned, and must present exactly that certificate; else nothing
    changes. Then it is the pin, the refusal is cleared, and an event names both."""
    try:
        wanted = tlsid.normalise(fingerprint)
    except ValueError:
        raise ServiceError(
            f"{fingerprint!r} is not a SHA-256 fingerprint (32 bytes in hex, AB:CD:…).", field="fingerprint"
        ) from None
    try:
        # pinned to the fingerprint the Admin confirmed: no signed request reaches any other
        # certificate (a presenter of another one gets nothing to attack the password with)
        target = dataclasses.replace(agent_client.target_for(appliance), fingerprint=wanted)
        _reply, seen = agent_client.call_seen(target, "GET", protocol.PATH_SERVER_INFO)
    except agent_client.AgentCertificateChanged as exc:
        raise ServiceError(
            f"{appliance.name} ({appliance.hm_ip}) presents the certificate {exc.got}, not {wanted}, the one"
            " confirmed. Nothing was changed: compare the fingerprints on the appliance again.",
            field="fingerprint",
        ) from None
    except (agent_client.AgentError, SecretUnreadable) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        raise ServiceError(
            f"Cannot check the certificate {appliance.name} presents now: {reason} Nothing was changed.",
            field="fingerprint",
        ) from None
    if seen != wanted:
        raise ServiceError(
            f"{appliance.name} ({appliance.hm_ip}) presents the certificate {seen}, not {wanted}, the one"
            " confirmed. Nothing was changed: compare the fingerprints on the appliance again.",
            field="fingerprint",
        )
    return deadlock_retried(
        lambda: _trust_record(appliance, wanted, by), what=f"trusting {appliance.name}'s certificate"
    )


@transaction.atomic
def _trust_record(appliance: Appliance, wanted: str, by: AbstractBaseUser | None) -> Appliance:
    """The trust's writes, in one transaction (retried whole if it is a deadlock's victim),
    the pair's rows locked first in the poller's order (the re-pin job locks the pair)."""
    rows_lock(appliance, pair=pair_for(appliance))
    locked = Appliance.objects.get(pk=appliance.pk)
    old = snapshot(locked)
    before = locked.tls_fingerprint
    if before == wanted and not locked.tls_presented:
        return locked  # trusted already: nothing to record
    _repin_on_peer(locked, by=by)  # first: a pair busy with a job refuses the trust, nothing changes
    locked.tls_fingerprint, locked.tls_presented = wanted, ""
    locked.save(update_fields=["tls_fingerprint", "tls_presented", "updated_at"])
    event_record(
        code=EventCode.CERTIFICATE_TRUSTED,
        generated_by=actor_name(by),
        appliance=locked,
        pair=pair_for(locked),
        remarks=f"{before or 'none pinned'} → {wanted}; trusted by {actor_name(by)}.",
    )
    # in this transaction (not by @audited: the agent is asked above, outside it)
    old, new = changed_only(old, snapshot(locked))
    audit_record("appliance.trust_certificate", target=locked, before=old, after=new, by=by)
    return locked


def _repin_on_peer(appliance: Appliance, *, by: AbstractBaseUser | None) -> None:
    """A paired appliance's peer pins it too: an update job gives the peer the new certificate
    (the pair's parameters unchanged), queued with the trust. While a job of the pair runs the
    trust is refused (JobConflict, a ServiceError): a re-pin left behind would let the peer
    take the node for gone, and fail over from a live primary."""
    pair = pair_for(appliance)
    if pair is None:
        return
    peer = pair.secondary if pair.primary_id == appliance.pk else pair.primary
    try:
        job_enqueue(
            kind=JobKind.UPDATE_HA,
            pair=pair,
            params={"remarks": f"{peer.name} now pins {appliance.name}'s new TLS certificate", "repin": appliance.pk},
            by=by,
            reason=f"the new TLS certificate of {appliance.name} was trusted",
        )
    except JobConflict as exc:
        raise JobConflict(
            f"{exc.message} Trust the new certificate once it has ended, so that {peer.name} learns it too."
        ) from None
