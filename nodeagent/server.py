"""HTTP servers of a node: the Health Monitor API on the HM IP (and direct-connect address),
and the service API (Context Aware element store) on the VIP while in charge."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
import weakref
from pathlib import Path

from aiohttp import web

from . import protocol as P
from . import tlsid
from .errors import ApiError
from .node import Node
from .replication import BadElement, validate_element
from .tlsport import TlsOnlySite
from .vip import IprouteVipDriver, LoopbackVipDriver

log = logging.getLogger("nodeagent.server")

NODE = web.RequestKey("mse_node", Node)  # the node a request is for (node_mw, by the local address)
MAX_BODY = 8 * 1024 * 1024
IDEMPOTENCY_KEEP = 2000


def jerr(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# ---------------------------------------------------------------- middlewares
@web.middleware
async def errors_mw(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as e:
        return jerr(e.status, e.message)
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        return jerr(e.status, e.reason)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return jerr(400, "body is not valid JSON")


@web.middleware
async def node_mw(request: web.Request, handler):
    """The HM application is shared by every node of the process (a farm runs thousands):
    a request is for the node listening on the address it came in on."""
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    node = SharedApps.current().by_address.get(sock[0]) if sock else None
    if node is None or node.closed:
        return jerr(503, "no node agent listens on this address any more")
    request[NODE] = node
    return await handler(request)


def _unsigned(path: str) -> bool:
    return not path.startswith(P.PREFIX + "/")


@web.middleware
async def protocol_mw(request: web.Request, handler):
    """Every answer says which protocol this agent speaks (signature_mw refuses a signed
    request in another version), and the time on this node's clock: the portal measures the
    offset of each node's clock from its own (drill timings, a clock drifting towards the
    signatures' freshness window)."""
    resp = await handler(request)
    resp.headers[P.HEADER_PROTOCOL] = str(P.PROTOCOL_VERSION)
    resp.headers[P.HEADER_TIME] = f"{time.time():.3f}"
    return resp


@web.middleware
async def signature_mw(request: web.Request, handler):
    if _unsigned(request.path):
        return await handler(request)
    node: Node = request[NODE]
    body = await request.read()
    try:
        P.verify_request(
            node.cfg.password,
            request.method,
            request.path_qs,
            body,
            request.headers,
            replay_cache=node.replay_cache,
        )
    except P.SignatureError as e:
        return jerr(401, str(e))
    try:  # authenticated, but a portal or peer not upgraded: say so, change nothing
        P.check_version(request.headers.get(P.HEADER_PROTOCOL), who="the caller")
    except P.ProtocolMismatch as e:
        return jerr(400, str(e))
    return await handler(request)


class IdempotencyStore:  # noqa: D101 - documented below
    """Answers to mutating requests by Idempotency-Key, persisted so a repeat after an
    agent restart still gets the first answer."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.entries: dict[str, dict] = node.sd.load("idempotency.json", {}) or {}
        self.locks: dict[str, asyncio.Lock] = {}

    def save(self) -> None:
        if len(self.entries) > IDEMPOTENCY_KEEP:
            for k in sorted(self.entries, key=lambda k: self.entries[k]["at"])[: len(self.entries) - IDEMPOTENCY_KEEP]:
                del self.entries[k]
        self.node.sd.save("idempotency.json", self.entries)


@web.middleware
async def idempotency_mw(request: web.Request, handler):
    if (
        request.method in ("GET", "HEAD", "OPTIONS")
        or _unsigned(request.path)
        or request.path.startswith(P.PREFIX + "/peer/")
    ):
        return await handler(request)
    key = request.headers.get(P.IDEMPOTENCY_HEADER, "").strip()
    if not key or len(key) > 200:
        return jerr(400, f"mutating requests need an {P.IDEMPOTENCY_HEADER} header (1-200 characters)")
    store = request[NODE].idempotency
    body = await request.read()
    fp = hashlib.sha256(f"{request.method} {request.path}\n".encode() + body).hexdigest()
    lock = store.locks.setdefault(key, asyncio.Lock())
    async with lock:
        prev = store.entries.get(key)
        if prev is not None:
            if prev["fp"] != fp:
                return jerr(422, f"{P.IDEMPOTENCY_HEADER} {key!r} was used for a different request")
            resp = web.json_response(prev["body"], status=prev["status"])
            resp.headers["Idempotent-Replayed"] = "true"
            return resp
        resp = await handler(request)
        if isinstance(resp, web.Response) and resp.status < 500 and resp.body is not None:
            try:
                data = json.loads(resp.body)  # type: ignore[arg-type]  # a json_response's body is bytes
            except (TypeError, ValueError):
                data = None
            store.entries[key] = {"fp": fp, "status": resp.status, "body": data, "at": time.time()}
            store.save()
        store.locks.pop(key, None)
        return resp


# ---------------------------------------------------------------- HM API handlers
async def _json(request: web.Request) -> dict:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON; nested past the parser's depth; a number past the digit limit
        raise ApiError(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def build_hm_app() -> web.Application:
    """The HM API of every node of the process (``request[NODE]``: see node_mw)."""
    app = web.Application(
        middlewares=[protocol_mw, errors_mw, node_mw, signature_mw, idempotency_mw], client_max_size=MAX_BODY
    )
    r = app.router

    async def server_info(request):
        node = request[NODE]
        return web.json_response(node.info.server_info())

    def _since_limit(request, since_name: str, limit_name: str) -> tuple[int, int]:
        try:
            since = int(request.query.get(since_name, "0"))
            limit = min(1000, max(1, int(request.query.get(limit_name, "500"))))
        except ValueError:
            raise ApiError(400, f"{since_name} and {limit_name} must be integers") from None
        return since, limit

    async def ha_info(request):
        node = request[NODE]
        info = node.info.ha_info(brief=request.query.get("brief") == "1")
        if "events_since" in request.query:  # the poller's one request: state and new events together
            since, limit = _since_limit(request, "events_since", "events_limit")
            info["events"] = node.info.events_since(since, limit)["events"] if since < node.seq else []
        return web.json_response(info)

    async def events(request):
        node = request[NODE]
        return web.json_response(node.info.events_since(*_since_limit(request, "since", "limit")))

    async def command(request) -> tuple[dict, P.Cause | None]:
        """An operator command's body, and its cause (echoed on the events it causes)."""
        body = await _json(request)
        return body, P.cause_from(body.get("cause"), key=request.headers.get(P.IDEMPOTENCY_HEADER))

    async def configure(request):
        node = request[NODE]
        out = node.operator.configure(*await command(request))
        return web.json_response(out, status=201 if out["created"] else 200)

    async def delete_peer(request):
        node = request[NODE]
        _, cause = await command(request)
        return web.json_response(await node.operator.delete_peer(request.match_info["peer_hm_ip"], cause))

    async def reset_sync(request):
        node = request[NODE]
        body, cause = await command(request)
        return web.json_response(node.operator.reset_sync(request.match_info["peer_hm_ip"], body, cause))

    async def failover(request):
        node = request[NODE]
        body, cause = await command(request)
        return web.json_response(await node.operator.invoke(body, "failover", cause), status=202)

    async def failback(request):
        node = request[NODE]
        body, cause = await command(request)
        return web.json_response(await node.operator.invoke(body, "failback", cause), status=202)

    async def licenses(request):
        node = request[NODE]
        return web.json_response({"licenses": [{k: v for k, v in x.items() if k != "text"} for x in node.licenses]})

    async def install_license(request):
        node = request[NODE]
        return web.json_response(node.operator.install_license(*await command(request)), status=201)

    async def remove_license(request):
        node = request[NODE]
        _, cause = await command(request)
        return web.json_response(node.operator.remove_license(request.match_info["license_id"], cause))

    async def assignments(request):
        return web.json_response({"assignments": request[NODE].assignments})

    async def delete_assignments(request):
        node = request[NODE]
        await command(request)
        return web.json_response(node.operator.delete_assignments())

    async def stop(request):
        node = request[NODE]
        _, cause = await command(request)
        return web.json_response(await node.operator.stop_services(cause))

    async def start(request):
        node = request[NODE]
        _, cause = await command(request)
        return web.json_response(await node.operator.start_services(cause))

    async def traps_get(request):
        node = request[NODE]
        return web.json_response(node.traps.info())

    async def traps_put(request):
        node = request[NODE]
        return web.json_response(node.operator.set_trap_destinations(await _json(request)))

    async def peer_command(request):
        node = request[NODE]
        return web.json_response(await node.procedures.peer_command(await _json(request)))

    async def peer_replicate(request):
        node = request[NODE]
        return web.json_response(node.procedures.peer_replicate(await _json(request)))

    async def peer_snapshot(request):
        node = request[NODE]
        return web.json_response(node.procedures.peer_snapshot(await _json(request)))

    # unsigned health checks for load balancers: no secrets, just the role answer
    async def health_primary(request):
        node = request[NODE]
        vips = sorted(node.desired_vips())
        return web.json_response({"in_charge": vips}, status=200 if vips else 503)

    async def health_secondary(request):
        node = request[NODE]
        ok = (
            node.cfg.role is P.Role.SECONDARY and node.services_running and bool(node.pairs) and not node.desired_vips()
        )
        return web.json_response({"standby": ok}, status=200 if ok else 503)

    async def health(request):
        node = request[NODE]
        ok = node.services_running
        return web.json_response({"running": ok}, status=200 if ok else 503)

    async def metrics(request):
        from . import metrics as node_metrics

        node = request[NODE]
        if not node.cfg.metrics_token:
            return jerr(404, "metrics are off on this node: set metrics_token in its configuration")
        if not node_metrics.token_ok(node, request.headers.get("Authorization", "")):
            return jerr(401, "metrics need 'Authorization: Bearer TOKEN', the node's metrics_token")
        body, content_type = node_metrics.exposition(node, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    r.add_get(P.PATH_SERVER_INFO, server_info)
    r.add_get(P.PATH_METRICS, metrics)
    r.add_get(P.PATH_HA_INFO, ha_info)
    r.add_get(P.PATH_EVENTS, events)
    r.add_post(P.PATH_HA_CONFIGURE, configure)
    r.add_delete(P.PATH_HA_PEER, delete_peer)
    r.add_post(P.PATH_HA_PEER_RESET, reset_sync)
    r.add_post(P.PATH_FAILOVER, failover)
    r.add_post(P.PATH_FAILBACK, failback)
    r.add_get(P.PATH_LICENSES, licenses)
    r.add_post(P.PATH_LICENSES, install_license)
    r.add_delete(P.PATH_LICENSE, remove_license)
    r.add_get(P.PATH_SERVICE_ASSIGNMENTS, assignments)
    r.add_delete(P.PATH_SERVICE_ASSIGNMENTS, delete_assignments)
    r.add_post(P.PATH_SERVICES_STOP, stop)
    r.add_post(P.PATH_SERVICES_START, start)
    r.add_get(P.PATH_TRAP_DESTINATIONS, traps_get)
    r.add_put(P.PATH_TRAP_DESTINATIONS, traps_put)
    r.add_post(P.PATH_PEER_COMMAND, peer_command)
    r.add_post(P.PATH_PEER_REPLICATE, peer_replicate)
    r.add_post(P.PATH_PEER_SNAPSHOT, peer_snapshot)
    r.add_get(P.PATH_HEALTH_PRIMARY, health_primary)
    r.add_get(P.PATH_HEALTH_SECONDARY, health_secondary)
    r.add_get(P.PATH_HEALTH, health)
    return app


# ---------------------------------------------------------------- service API (on the VIP)
ELEMENTS = "/api/contextaware/v1/elements"


def build_service_app() -> web.Application:
    """The service API on the VIPs of every node of the process: a request is for the node
    that took the VIP it came in on (SharedApps.by_vip)."""
    app = web.Application(middlewares=[errors_mw], client_max_size=1024 * 1024)

    def bind(request: web.Request):
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        vip = sock[0] if sock else ""
        node = SharedApps.current().by_vip.get(vip)
        if node is None:
            raise ApiError(503, "this node is not in charge of the virtual IP")
        in_charge, pr, inst, password = node.binding_for(vip)
        if not in_charge or inst is None:
            raise ApiError(503, "this node is not in charge of the virtual IP")
        auth = request.headers.get("Authorization", "")
        ok = False
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                ok = user == "admin" and hmac.compare_digest(pw.encode(), password.encode())
            except (binascii.Error, UnicodeDecodeError):
                ok = False
        if not ok:
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": 'Basic realm="MSE"'},
                text=json.dumps({"error": "HTTP Basic authentication as admin required"}),
                content_type="application/json",
            )
        return node, vip, pr, inst

    async def post_element(request):
        node, vip, pr, inst = bind(request)
        try:
            element = validate_element(await request.json())
        except BadElement as e:
            raise ApiError(400, str(e)) from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError(400, "body is not valid JSON") from None
        rec = await node.procedures.write_element(vip, element)
        return web.json_response({"element": rec, "served_by": node.cfg.name}, status=201)

    async def get_element(request):
        node, vip, pr, inst = bind(request)
        rec = inst.get(request.match_info["mac"])
        if rec is None:
            raise ApiError(404, "no such element")
        return web.json_response({"element": rec, "served_by": node.cfg.name})

    async def list_elements(request):
        node, vip, pr, inst = bind(request)
        try:
            limit = int(request.query.get("limit", "100"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            raise ApiError(400, "limit and offset must be integers") from None
        recs = inst.snapshot()
        return web.json_response(
            {"count": len(recs), "elements": recs[offset : offset + max(0, limit)], "served_by": node.cfg.name}
        )

    app.router.add_post(ELEMENTS, post_element)
    app.router.add_get(ELEMENTS, list_elements)
    app.router.add_get(ELEMENTS + "/{mac}", get_element)
    return app


# ---------------------------------------------------------------- running nodes
class SharedApps:
    """The HM and service applications of a process, shared by all its nodes: one router, one
    request handler factory and one set of middlewares for thousands of nodes, not one of each
    per node (an agent farm's memory). ``by_address``: the node listening on each HM or
    direct-connect address; ``by_vip``: the node that took each VIP."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedApps] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.by_address: dict[str, Node] = {}
        self.by_vip: dict[str, Node] = {}
        self.hm_runner: web.AppRunner | None = None
        self.svc_runner: web.AppRunner | None = None
        self.users = 0
        self.lock = asyncio.Lock()

    @classmethod
    def current(cls) -> SharedApps:
        loop = asyncio.get_running_loop()
        apps = cls._by_loop.get(loop)
        if apps is None:
            apps = cls._by_loop[loop] = cls()
        return apps

    async def acquire(self) -> tuple[web.AppRunner, web.AppRunner]:
        async with self.lock:
            if self.hm_runner is None or self.svc_runner is None:
                opts = {"access_log": None, "handle_signals": False, "shutdown_timeout": 0.25}
                self.hm_runner = web.AppRunner(build_hm_app(), **opts)  # type: ignore[arg-type]
                await self.hm_runner.setup()
                self.svc_runner = web.AppRunner(build_service_app(), **opts)  # type: ignore[arg-type]
                await self.svc_runner.setup()
            self.users += 1
            return self.hm_runner, self.svc_runner

    async def release(self, node: Node) -> None:
        for table in (self.by_address, self.by_vip):
            for key in [k for k, v in table.items() if v is node]:
                del table[key]
        async with self.lock:
            self.users -= 1
            if self.users > 0:
                return
            runners, self.hm_runner, self.svc_runner = (self.svc_runner, self.hm_runner), None, None
        for r in runners:
            if r is not None:
                await r.cleanup()


class NodeServer:
    """One node: its HM API listener(s) and heartbeat sockets, its VIP driver and its runtime."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.apps: SharedApps | None = None
        self.sites: list[web.BaseSite] = []

    async def start(self) -> None:
        node = self.node
        self.apps = apps = SharedApps.current()
        hm_runner, svc_runner = await apps.acquire()
        cfg = node.cfg
        addresses = cfg.addresses
        node.identity = tlsid.ensure(  # IdentityError: the CLI says which file and why
            node.sd.root, name=cfg.name, addresses=addresses, cert_file=cfg.tls_cert, key_file=cfg.tls_key
        )
        if node.identity.made:
            log.info("%s: made its TLS certificate, fingerprint %s", cfg.name, node.identity.fingerprint)
        node.replay_cache = P.ReplayCache()
        node.idempotency = IdempotencyStore(node)
        for addr in addresses:  # TLS only; a plain-HTTP client is told so (nodeagent.tlsport)
            site = TlsOnlySite(hm_runner, addr, cfg.port, ssl_context=node.identity.server_context)
            await site.start()  # OSError (in use): nothing of another node's is touched
            self.sites.append(site)
            apps.by_address[addr] = node
        await node.heartbeats.listen(cfg.port)  # the heartbeat datagrams: the same port number, UDP
        if node.cfg.real_network:
            assert node.cfg.hm_interface, "validated: the iproute driver has its interface"
            driver = IprouteVipDriver(
                svc_runner, node.cfg.port, node.cfg.hm_interface, ssl_context=node.identity.server_context
            )
            driver.may_announce = node.may_announce
            driver.lifetime_of = node.vip_lifetime
            driver.on_expired = node.wake
            node.vip_driver = driver
        else:
            node.vip_driver = LoopbackVipDriver(svc_runner, node.cfg.port, ssl_context=node.identity.server_context)
        node.vip_driver.taken = lambda vip, taken: self._vip(vip, taken)
        await node.start()

    def _vip(self, vip: str, taken: bool) -> None:
        assert self.apps is not None
        if taken:
            self.apps.by_vip[vip] = self.node
        elif self.apps.by_vip.get(vip) is self.node:
            del self.apps.by_vip[vip]

    async def close(self, *, graceful: bool = False) -> None:
        await self.node.close(graceful=graceful)
        for site in self.sites:
            await site.stop()
        self.sites.clear()
        if self.apps is not None:
            apps, self.apps = self.apps, None
            # the connections this node accepted go with it (the runner is shared)
            server = apps.hm_runner.server if apps.hm_runner is not None else None
            mine = {a for a, n in apps.by_address.items() if n is self.node}
            for handler in list(getattr(server, "_connections", ())):
                transport = getattr(handler, "transport", None)
                if transport is None:
                    continue
                sock = transport.get_extra_info("sockname")
                if sock and sock[0] in mine:
                    transport.close()
            await apps.release(self.node)


def default_state_dir(name: str) -> Path:
    return Path.cwd() / "var" / "nodeagent" / name
