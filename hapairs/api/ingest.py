"""The agents' event pushes (trap destination)."""

from __future__ import annotations

import ipaddress
import json

from ninja import Router, Schema
from ninja.errors import HttpError

from hapairs import (
    agent_client,
    agent_replies,
    dispatch,
    selectors,
    services,
)
from hapairs.api.core import ErrorOut
from hapairs.crypto import SecretUnreadable
from hapairs.models import Appliance
from nodeagent import protocol

router = Router()


class IngestOut(Schema):
    stored: int


# --- agents' event pushes (trap destination) -----------------------------------------------
_ingest_replays = protocol.ReplayCache()


@router.post(
    "/ingest/events",
    auth=None,
    response={200: IngestOut, **{code: ErrorOut for code in (400, 401, 413)}},
    summary="Agents push their events here (signed)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["hm_ip", "events"],
                        "properties": {
                            "hm_ip": {"type": "string", "format": "ipv4", "description": "the sender's HM IP"},
                            "events": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                }
            },
        }
    },
)
def ingest_events(request):
    """Signed by the sending agent with its own password (the one the portal holds)."""
    body = request.body
    if len(body) > 2 * 1024 * 1024:
        raise HttpError(413, "Event push larger than 2 MiB.")
    try:
        push = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "The body is not JSON.") from None
    hm_ip = push.get("hm_ip") if isinstance(push, dict) else None
    try:  # an address before any query (PostgreSQL's inet refuses junk with an error)
        hm_ip = str(ipaddress.IPv4Address(hm_ip)) if isinstance(hm_ip, str) else None
    except ValueError:
        hm_ip = None
    appliance = Appliance.objects.filter(hm_ip=hm_ip).first() if hm_ip is not None else None
    if appliance is None:
        raise HttpError(401, "Unknown sender.")
    headers = {key: value for key, value in request.headers.items()}
    try:
        protocol.verify_request(
            appliance.get_password(),
            request.method,
            request.get_full_path(),
            body,
            headers,
            replay_cache=_ingest_replays,
        )
    except (protocol.SignatureError, SecretUnreadable):
        raise HttpError(401, "Bad or missing signature.") from None
    try:
        protocol.check_version(request.headers.get(protocol.HEADER_PROTOCOL), who=f"the agent {appliance.name}")
    except protocol.ProtocolMismatch as exc:
        raise HttpError(400, str(exc)) from None
    try:
        events = agent_replies.parse_events(push.get("events", []), source=appliance.name)
    except agent_client.AgentBadReply as exc:
        raise HttpError(400, exc.message) from None
    stored = services.events_ingest(appliance=appliance, events=events)
    if stored:
        peers = {pk for both in selectors.pairs_of(appliance).values_list("primary_id", "secondary_id") for pk in both}
        dispatch.on_commit(dispatch.APPLIANCES_REFRESH, [appliance.pk, *sorted(peers - {appliance.pk})])
    return {"stored": stored}
