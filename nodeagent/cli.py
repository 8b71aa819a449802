"""Command line: serve · farm · witness · setup · gethainfo · getserverinfo.

Errors (bad flags, bad fleet files, unreachable nodes) print one clear line on stderr and
exit non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import ctypes
import gc
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from typing import NoReturn

import aiohttp

from . import store, tlsid
from .client import PEER_KEEPALIVE, AgentClient, AgentError
from .config import DEVICE_TYPES, VIP_DRIVERS, ConfigError, Fleet, NodeConfig, load_fleet
from .errors import EXIT_FAIL, EXIT_USAGE, CliError
from .haconfig import MIN_WITNESS_PASSWORD, check_witness
from .hastate import PairHA
from .node import Node
from .output import format_hainfo, format_serverinfo
from .protocol import DEFAULT_PORT, PATH_HA_INFO, PATH_SERVER_INFO, Role, instance_names
from .server import NodeServer
from .setup_wizard import cmd_setup
from .store import pid_running, read_json
from .witness import serve_witness


class Parser(argparse.ArgumentParser):
    commands: dict[str, Parser]  # the top-level parser's subcommands, by name

    def error(self, message: str) -> NoReturn:  # argparse prints usage + message, exit 2
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> Parser:
    p = Parser(prog="python -m nodeagent", description="MSE Health Monitor (node agent)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    p.commands = sub.choices

    s = sub.add_parser("serve", help="run one node")
    s.add_argument("--fleet", help="fleet TOML file (node identity and declared pairs)")
    s.add_argument("--node", help="node name in the fleet file")
    s.add_argument("--state-dir", help="state directory (default var/nodeagent/NAME)")
    s.add_argument("--port", type=int, help=f"HM/service port (default from the fleet, else {DEFAULT_PORT})")
    s.add_argument("--allow-short-wait", action="store_true", help="tests only: allow a failover wait below 2 s")
    s.add_argument("--log-level", default="WARNING")

    f = sub.add_parser("farm", help="run every node of a fleet file in one process")
    f.add_argument("--fleet", required=True)
    f.add_argument("--state-root", help="parent of the state directories (default var/nodeagent)")
    f.add_argument("--port", type=int)
    f.add_argument("--allow-short-wait", action="store_true")
    f.add_argument("--log-level", default="WARNING")
    f.add_argument("--ready-file", help="write this file once every node listens")
    f.add_argument(
        "--fsync",
        action="store_true",
        help="fsync every state file as a real appliance's agent does (a farm does not by default)",
    )

    st = sub.add_parser("setup", help="the set-up wizard (interactive, or with flags and --yes)")
    st.add_argument("--state-dir", help="state directory (default var/nodeagent/NAME)")
    st.add_argument("--name", help="host name")
    st.add_argument("--domain")
    st.add_argument("--role", choices=["1", "2", "primary", "secondary"])
    st.add_argument("--type", dest="device_type", choices=DEVICE_TYPES)
    st.add_argument("--version")
    st.add_argument("--hm-interface", help="Health Monitor interface (eth0/eth1)")
    st.add_argument("--direct-interface", help="direct connect interface (eth0/eth1/none)")
    st.add_argument("--hm-ip", help="Health Monitor interface address")
    st.add_argument("--direct-connect", help="direct connect interface address, or none")
    st.add_argument(
        "--vip-driver", choices=VIP_DRIVERS, help="loopback (development machine) or iproute (a real interface)"
    )
    st.add_argument("--vip")
    st.add_argument("--netmask")
    st.add_argument("--recovery", choices=["yes", "no"])
    st.add_argument("--password")
    st.add_argument("--timezone")
    st.add_argument("--ntp")
    st.add_argument("--dns")
    st.add_argument("--port", type=int)
    st.add_argument("--yes", action="store_true", help="apply without asking (non-interactive)")

    w = sub.add_parser("witness", help="run a witness (arbiter) for HA pairs")
    w.add_argument("--listen", required=True, help="IP[:PORT] to listen on (port 8002 by default)")
    w.add_argument(
        "--password",
        help="the pairs' witness_password (else $MSE_WITNESS_PASSWORD: a service keeps it off the command line)",
    )
    w.add_argument("--state-file", help="where confirmed takeovers are kept across restarts")
    w.add_argument("--log-level", default="INFO")

    for name in ("gethainfo", "getserverinfo"):
        g = sub.add_parser(name, help=f"print {name} as the appliance does")
        g.add_argument("--fleet")
        g.add_argument("--node")
        g.add_argument("--state-dir")
        g.add_argument("--host", help="HM IP of a running node (with --password)")
        g.add_argument("--password")
        g.add_argument("--port", type=int)
        g.add_argument("--timeout", type=float, default=3.0)
    return p


# ---------------------------------------------------------------- helpers
def _fleet(path: str | None, allow_short_wait: bool = False) -> Fleet | None:
    if not path:
        return None
    return load_fleet(path, allow_short_wait=allow_short_wait)


def declared_pairs(fleet: Fleet, name: str):
    out = []
    me = fleet.node(name)
    for d in fleet.pairs_of(name):
        peer_cfg = fleet.node(d.secondary if d.primary == name else d.primary)
        peer = {
            "name": peer_cfg.name,
            "hm_ip": peer_cfg.hm_ip,
            "password": peer_cfg.password,
            "version": peer_cfg.version,
            "udi": peer_cfg.udi,
            "device_type": peer_cfg.device_type,
            "vip": peer_cfg.vip,
            "netmask": peer_cfg.netmask,
            "direct_connect": peer_cfg.direct_connect,
            "port": peer_cfg.port,
        }
        out.append((peer, copy.deepcopy(d.config)))
    del me
    return out


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _logging(level: str) -> None:
    lv = getattr(logging, str(level).upper(), None)
    if not isinstance(lv, int):
        raise CliError(f"unknown log level {level!r}")
    logging.basicConfig(level=lv, format="%(asctime)s %(name)s %(levelname)s %(message)s")


# ---------------------------------------------------------------- serve / farm
async def _run(
    nodes: list[tuple[NodeConfig, Path, list]], *, allow_short_wait: bool, ready_file: str | None = None
) -> int:
    tlsid.lean_tls_buffers()
    try:  # in a child: this process serves them without importing cryptography
        made = tlsid.make_missing([(sd, cfg.name, cfg.addresses, cfg.tls_cert, cfg.tls_key) for cfg, sd, _ in nodes])
    except tlsid.IdentityError as e:
        raise CliError(f"TLS: {e}") from None
    if made:
        logging.getLogger("nodeagent").info("made %d TLS identit%s", made, "y" if made == 1 else "ies")
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=8, keepalive_timeout=PEER_KEEPALIVE)
    )
    servers: list[NodeServer] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # no cyclic garbage collection while the nodes start: each full collection walks every
    # object of the nodes already started (quadratic over a farm's start); one collection
    # once started, then the start-up's objects are frozen out of later full collections
    gc.disable()
    try:
        for cfg, sd, pairs in nodes:
            node = Node(cfg, sd, session=session, allow_short_wait=allow_short_wait)
            node.load(pairs)
            srv = NodeServer(node)
            try:
                await srv.start()
            except tlsid.IdentityError as e:
                await srv.close()
                raise CliError(f"node {cfg.name}: TLS: {e}") from None
            except OSError as e:
                await srv.close()
                raise CliError(f"node {cfg.name}: cannot listen on {cfg.hm_ip}:{cfg.port}: {e.strerror or e}") from None
            servers.append(srv)
            (sd / "agent.pid").write_text(str(os.getpid()))
        gc.collect()
        gc.freeze()
        gc.enable()
        if ready_file:
            Path(ready_file).write_text(str(len(servers)))
        loop.call_later(5.0, _trim_heap)  # once the start-up's connections (hello, first sync) are closed
        loop.call_later(STARTED_AFTER, _refreeze)
        loop.call_later(TRIM_PERIOD, _trim_heap_every, loop)
        print(
            f"nodeagent: {len(servers)} node(s) running "
            f"({', '.join(f'{s.node.cfg.name}@{s.node.cfg.hm_ip}:{s.node.cfg.port}' for s in servers[:5])}"
            f"{', ...' if len(servers) > 5 else ''})",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        gc.enable()
        await asyncio.gather(*(s.close(graceful=stop.is_set()) for s in servers), return_exceptions=True)
        for _cfg, sd, _ in nodes:
            try:
                (sd / "agent.pid").unlink()
            except FileNotFoundError:
                pass
        await session.close()
    return 0


TRIM_PERIOD = 60.0  # seconds between two trims of the heap while the nodes run
STARTED_AFTER = 30.0  # seconds after the start when its hellos and first syncs are over


def _refreeze() -> None:
    """Collect what the start-up left once its hellos and first syncs are over, then freeze
    again. The freeze at the start also froze the objects of those still in flight (a
    coroutine, its task, the request and response of each pair's hello and sync); frozen,
    their cycles would never be collected once they end (a 2,000-node farm: ~25,000 blocks).
    One full collection, as at the start (~0.2 s for 2,000 nodes), then the trim."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _trim_heap()


def _trim_heap_every(loop: asyncio.AbstractEventLoop) -> None:
    """Trim the heap each TRIM_PERIOD: the TLS connections a portal opens to poll (a farm's
    thousands of nodes, a handshake each) leave freed pages that glibc keeps resident (a farm
    of 2,000 nodes: about 2.5 KB per node more after 10 minutes of sampling). A trim of a
    120 MB heap takes a few milliseconds."""
    _trim_heap()
    loop.call_later(TRIM_PERIOD, _trim_heap_every, loop)


def _trim_heap() -> None:
    """Give the start-up's transient memory back to the system (glibc's malloc_trim): the
    thousands of TLS handshakes, JSON bodies and buffers of a farm's start leave free holes
    that glibc otherwise keeps as resident memory. Nothing on another C library."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cmd_serve(a) -> int:
    _logging(a.log_level)
    fleet = _fleet(a.fleet, a.allow_short_wait)
    if fleet is not None:
        if not a.node:
            raise CliError("--node NAME is required with --fleet")
        cfg = fleet.node(a.node)
        pairs = declared_pairs(fleet, a.node)
    else:
        if not a.state_dir:
            raise CliError("give --fleet FILE --node NAME, or --state-dir DIR of a node set up with `setup`")
        saved = read_json(Path(a.state_dir) / "config.json")
        if not saved:
            raise CliError(
                f"{a.state_dir} has no config.json; run `python -m nodeagent setup --state-dir {a.state_dir}` first"
            )
        cfg = NodeConfig.from_dict(saved).validate()
        pairs = []
    if a.port:
        cfg.port = a.port
    sd = Path(a.state_dir) if a.state_dir else Path.cwd() / "var" / "nodeagent" / cfg.name
    _check_not_running(sd)
    return asyncio.run(_run([(cfg, sd, pairs)], allow_short_wait=a.allow_short_wait))


def _check_not_running(sd: Path) -> None:
    pidf = sd / "agent.pid"
    try:
        pid = int(pidf.read_text())
    except (FileNotFoundError, ValueError):
        return
    if pid != os.getpid() and pid_running(pid):
        raise CliError(f"a node agent (pid {pid}) already runs with state directory {sd}")


def cmd_farm(a) -> int:
    _logging(a.log_level)
    if not a.fsync:  # a simulator of many appliances: atomic files, no journal commit for each
        store.set_durable(False)
    fleet = _fleet(a.fleet, a.allow_short_wait)
    if fleet is None:
        raise CliError("farm needs --fleet FILE")
    root = Path(a.state_root) if a.state_root else Path.cwd() / "var" / "nodeagent"
    _raise_nofile()
    nodes = []
    for name, cfg in fleet.nodes.items():
        if a.port:
            cfg.port = a.port
        sd = root / name
        _check_not_running(sd)
        nodes.append((cfg, sd, declared_pairs(fleet, name)))
    return asyncio.run(_run(nodes, allow_short_wait=a.allow_short_wait, ready_file=a.ready_file))


# ---------------------------------------------------------------- gethainfo / getserverinfo
def _target(a) -> tuple[str, str, int, Path | None]:
    """(host, password, port, state dir or None)."""
    if a.host:
        if not a.password:
            raise CliError("--host needs --password (the node's admin password)")
        sd = Path(a.state_dir) if a.state_dir else None
        return a.host, a.password, a.port or DEFAULT_PORT, sd
    if a.fleet and a.node:
        cfg = load_fleet(a.fleet, allow_short_wait=True).node(a.node)
        sd = Path(a.state_dir) if a.state_dir else Path.cwd() / "var" / "nodeagent" / cfg.name
        return cfg.hm_ip, cfg.password, a.port or cfg.port, sd
    if a.state_dir:
        saved = read_json(Path(a.state_dir) / "config.json")
        if not saved:
            raise CliError(f"{a.state_dir} has no config.json")
        cfg = NodeConfig.from_dict(saved)
        return cfg.hm_ip, cfg.password, a.port or cfg.port, Path(a.state_dir)
    raise CliError("say which node: --fleet FILE --node NAME [--state-dir DIR], or --host IP --password PW")


async def _fetch(host: str, password: str, port: int, path: str, timeout: float, fingerprint: str | None = None):
    async with aiohttp.ClientSession() as s:
        client = AgentClient(s, host, password, port=port, timeout=timeout, fingerprint=fingerprint)
        return await client.call("GET", path)


def _own_fingerprint(sd: Path | None) -> str | None:
    """The node's own certificate, when its state directory is here: the CLI then talks to
    exactly that agent (with an operator's certificate, or from elsewhere: unpinned)."""
    cert = sd / "tls" / tlsid.CERT_FILE if sd else None
    try:
        return tlsid.read_fingerprint(cert) if cert and cert.exists() else None
    except ValueError:
        return None


def offline_ha_info(sd: Path) -> dict:
    cfg_d = read_json(sd / "config.json")
    ha_d = read_json(sd / "ha.json")
    if not cfg_d or ha_d is None:
        raise CliError(f"Health Monitor is not running and {sd} holds no saved configuration")
    cfg = NodeConfig.from_dict(cfg_d)
    peers = []
    for d in ha_d.get("pairs", []):
        ha = PairHA.from_dict(d["ha"])
        names = instance_names(int(d["slot"]))
        primary = cfg.role is Role.PRIMARY
        peer = d["peer"]
        peers.append(
            {
                "hm_ip": peer["hm_ip"],
                "vip": cfg.vip if primary else peer.get("vip"),
                "version": peer["version"],
                "udi": peer.get("udi", ""),
                "failover_type": ha.config.failover_type.value,
                "failback_type": ha.config.failback_type.value,
                "failover_wait": ha.config.failover_wait,
                "instance_db_name": names["standby_db_name"] if primary else names["secondary_db_name"],
                "instance_db_port": names["standby_db_port"] if primary else names["secondary_db_port"],
                "dataguard_name": names["dataguard_name"],
                "primary_db_alias": names["primary_db_alias"],
                "direct_connect": bool(cfg.direct_connect and peer.get("direct_connect")),
                "heartbeat": "Down",
                "state": ha.state.value,
                "running": False,
            }
        )
    return {
        "role": cfg.role.value,
        "hm_ip": cfg.hm_ip,
        "vip": cfg.vip,
        "version": cfg.version,
        "udi": cfg.udi,
        "peers": peers,
    }


def cmd_info(a, which: str) -> int:
    host, password, port, sd = _target(a)
    path = PATH_HA_INFO if which == "gethainfo" else PATH_SERVER_INFO
    try:
        info = asyncio.run(_fetch(host, password, port, path, a.timeout, _own_fingerprint(sd)))
        reachable = True
    except AgentError as e:
        raise CliError(f"the node at {host}:{port} refused the request: {e}") from None
    except aiohttp.ServerFingerprintMismatch:
        raise CliError(
            f"the agent at {host}:{port} presents another TLS certificate than {sd}/tls/{tlsid.CERT_FILE}:"
            " another process holds the address, or the certificate was replaced"
        ) from None
    except (TimeoutError, aiohttp.ClientError, OSError):
        info, reachable = None, False
    if which == "getserverinfo":
        sys.stdout.write(format_serverinfo(info, running=reachable))
        return 0
    if reachable:
        # services stopped by hand or for a failover: the Health Monitor reports as stopped
        running = bool(info.get("running", True))
        sys.stdout.write(format_hainfo(info, running=running))
        return 0
    if sd is None:
        raise CliError(
            f"Health Monitor at {host}:{port} is not running; give --state-dir to read the last saved configuration"
        )
    sys.stdout.write(format_hainfo(offline_ha_info(sd), running=False))
    return 0


# ---------------------------------------------------------------- setup
def cmd_witness(a) -> int:
    _logging(a.log_level)
    try:
        address = check_witness(a.listen)
    except ValueError as e:
        raise CliError(str(e)) from None
    password = a.password if a.password is not None else os.environ.get("MSE_WITNESS_PASSWORD", "")
    if not password:
        raise CliError("give the witness password: --password, or MSE_WITNESS_PASSWORD in the environment")
    if len(password) < MIN_WITNESS_PASSWORD:
        raise CliError(f"the witness password must be at least {MIN_WITNESS_PASSWORD} characters")
    host, _, port = address.partition(":")
    try:
        asyncio.run(serve_witness(host, int(port), password, Path(a.state_file) if a.state_file else None))
    except OSError as e:
        raise CliError(f"witness cannot listen on {address}: {e.strerror or e}") from None
    return 0


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """``prog``: the name a console script runs this subcommand as (``mse-setup``), for its usage."""
    parser = build_parser()
    if prog and argv and argv[0] in parser.commands:
        parser.commands[argv[0]].prog = prog
    a = parser.parse_args(argv)
    try:
        if a.cmd == "serve":
            return cmd_serve(a)
        if a.cmd == "farm":
            return cmd_farm(a)
        if a.cmd == "setup":
            return cmd_setup(a)
        if a.cmd == "witness":
            return cmd_witness(a)
        return cmd_info(a, a.cmd)
    except (CliError, ConfigError) as e:
        print(f"nodeagent: error: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
