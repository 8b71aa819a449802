"""Node configuration (what set-up leaves) and fleet files (TOML). Stdlib only."""

from __future__ import annotations

import ipaddress
import re
import tomllib
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from .hastate import PairConfig
from .protocol import DEFAULT_PORT, Mode, Role

DEVICE_TYPES = ("3310", "3350", "3355", "3365", "VA-Low", "VA-Standard", "VA-High")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
VERSION_RE = re.compile(r"^\d+(\.\d+){1,3}$")

# Context Aware element limits per platform (licensed limit shown by getserverinfo)
ELEMENT_LIMITS = {
    "3310": 2000,
    "3350": 18000,
    "3355": 25000,
    "3365": 50000,
    "VA-Low": 2000,
    "VA-Standard": 18000,
    "VA-High": 50000,
}


class ConfigError(ValueError):
    """A bad node configuration or fleet file; the message says what and where."""


def product_identifier(device_type: str) -> str:
    return "AIR-MSE-VA-K9" if device_type.startswith("VA") else f"AIR-MSE-{device_type}-K9"


VIP_DRIVER_LOOPBACK = "loopback"
VIP_DRIVER_IPROUTE = "iproute"
VIP_DRIVERS = (VIP_DRIVER_LOOPBACK, VIP_DRIVER_IPROUTE)
IFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # Linux: at most 15 characters


def check_ip(value: object, what: str, *, allow_non_loopback: bool) -> str:
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an IPv4 address") from None
    if not allow_non_loopback and not ip.is_loopback:
        raise ConfigError(f"{what}: {ip} is not a loopback address; on a development machine map 10.a.b.c to 127.a.b.c")
    return str(ip)


def same_subnet(a: str, b: str, netmask: str) -> bool:
    net = ipaddress.IPv4Network(f"{a}/{netmask}", strict=False)
    return ipaddress.IPv4Address(b) in net


@dataclass(slots=True)  # slots, not a dict per node: an agent farm holds thousands
class NodeConfig:
    name: str
    device_type: str
    version: str
    role: Role
    hm_ip: str
    password: str
    vip: str | None = None
    netmask: str | None = None
    udi: str = ""
    direct_connect: str | None = None  # this node's direct-connect (eth1) address, if any
    hostname: str = ""
    domain: str = "localdomain"
    port: int = DEFAULT_PORT
    timezone: str = "UTC"
    ntp: str = ""
    dns: str = ""
    trap_destinations: list[str] = field(default_factory=list)
    # set-up's "recovery mode" (spec §3): this primary was paired and lost its configuration;
    # until the manager restores it, it does not claim its VIP (the secondary may hold it)
    recovery: bool = False
    # set-up's interfaces (spec §3): the Health Monitor interface holds the HM IP and the
    # VIPs this node takes; the direct-connect interface (or none) the direct link's address
    hm_interface: str | None = None
    direct_interface: str | None = None
    # how a VIP is taken: "loopback" (development and most tests: 127.0.0.0/8 only) or
    # "iproute" (a real interface: ip addr add VIP/PREFIX, gratuitous ARP; CAP_NET_ADMIN)
    vip_driver: str = VIP_DRIVER_LOOPBACK
    # the HM port's TLS certificate and key (PEM files), when the operator gives one; else the
    # agent makes its own in STATE_DIR/tls/ (nodeagent.tlsid)
    tls_cert: str | None = None
    tls_key: str | None = None
    # the service assignments a manager synchronized to this node before ("SERVICE: element",
    # e.g. "Context Aware Service: Campus > Building 1 > Floor 2"): the state a node starts
    # with when it has none saved (a node once managed elsewhere; the demo's and the tests')
    service_assignments: list[str] = field(default_factory=list)
    # the bearer token a Prometheus server scrapes GET /metrics with (nodeagent.metrics);
    # empty: the metrics are off
    metrics_token: str = ""
    # scripts run when this node takes charge of a pair (nodeagent.hooks): "pre_takeover"
    # (awaited, at most hook_timeout seconds, before it takes the VIP) and "post_takeover"
    # (once it holds it; not awaited); absolute paths
    hooks: dict[str, str] = field(default_factory=dict)
    hook_timeout: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.role, str) and not isinstance(self.role, Role):
            try:
                self.role = Role(self.role.lower())
            except ValueError:
                raise ConfigError(f"node {self.name}: role must be primary or secondary, not {self.role!r}") from None
        if not self.udi:
            serial = f"{self.name}_{uuid.uuid5(uuid.NAMESPACE_DNS, self.name + '.' + self.hm_ip)}"
            self.udi = f"{product_identifier(self.device_type)}:V01:{serial}"
        if not self.hostname:
            self.hostname = self.name

    @property
    def serial(self) -> str:
        return self.udi.split(":", 2)[-1]

    @property
    def product_identifier(self) -> str:
        return product_identifier(self.device_type)

    @property
    def addresses(self) -> list[str]:
        """The node's own addresses, where it listens and which its TLS certificate names."""
        return [a for a in (self.hm_ip, self.direct_connect) if a]

    @property
    def real_network(self) -> bool:
        """On a real interface: any address a real network gives is accepted."""
        return self.vip_driver == VIP_DRIVER_IPROUTE

    def validate(self, *, allow_non_loopback: bool = False) -> NodeConfig:
        where = f"node {self.name!r}"
        if self.vip_driver not in VIP_DRIVERS:
            raise ConfigError(f"{where}: vip_driver must be one of {', '.join(VIP_DRIVERS)}, not {self.vip_driver!r}")
        # loopback-only addresses are the loopback driver's rule, not the product's
        allow_non_loopback = allow_non_loopback or self.real_network
        for key in ("hm_interface", "direct_interface"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not IFACE_RE.match(value)):
                raise ConfigError(
                    f"{where}: {key} must be an interface name such as eth0 (1-15 letters, digits, . _ -)"
                )
        if self.real_network and not self.hm_interface:
            raise ConfigError(
                f"{where}: the iproute VIP driver needs hm_interface (the Health Monitor interface, e.g. eth0)"
            )
        if self.direct_interface and not self.direct_connect:
            raise ConfigError(f"{where}: direct_interface needs direct_connect (this node's address on that link)")
        for key in ("tls_cert", "tls_key"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{where}: {key} must be the path of a PEM file")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(
                f"{where}: tls_cert and tls_key go together: give both, or neither (the agent makes its own)"
            )
        if self.direct_interface and self.direct_interface == self.hm_interface:
            raise ConfigError(f"{where}: the direct-connect interface must differ from the Health Monitor interface")
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ConfigError(f"{where}: name must be 1-63 letters, digits, '.', '_' or '-'")
        if self.device_type not in DEVICE_TYPES:
            raise ConfigError(f"{where}: type must be one of {', '.join(DEVICE_TYPES)}, not {self.device_type!r}")
        if not isinstance(self.version, str) or not VERSION_RE.match(self.version):
            raise ConfigError(f"{where}: version must look like 7.2.103.0, not {self.version!r}")
        if not isinstance(self.password, str) or len(self.password) < 4:
            raise ConfigError(f"{where}: password must be at least 4 characters")
        self.hm_ip = check_ip(self.hm_ip, f"{where} hm_ip", allow_non_loopback=allow_non_loopback)
        if self.direct_connect:
            self.direct_connect = check_ip(
                self.direct_connect, f"{where} direct_connect", allow_non_loopback=allow_non_loopback
            )
            if self.direct_connect == self.hm_ip:
                raise ConfigError(f"{where}: the direct connect address must differ from the Health Monitor IP")
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigError(f"{where}: port must be 1-65535")
        if self.role is Role.PRIMARY:
            if not self.vip or not self.netmask:
                raise ConfigError(f"{where}: a primary needs vip and netmask")
            self.vip = check_ip(self.vip, f"{where} vip", allow_non_loopback=allow_non_loopback)
            try:
                ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}")
            except ValueError:
                raise ConfigError(f"{where}: netmask {self.netmask!r} is not valid") from None
            if self.vip == self.hm_ip:
                raise ConfigError(f"{where}: the Health Monitor IP and the VIP must be different")
            if not same_subnet(self.hm_ip, self.vip, self.netmask):
                raise ConfigError(
                    f"{where}: the Health Monitor IP and the VIP must be in the same subnet (Layer-3 redundancy is not supported)"
                )
        elif self.vip:
            raise ConfigError(f"{where}: a secondary has no VIP (Not Applicable for a secondary)")
        if self.recovery and self.role is not Role.PRIMARY:
            raise ConfigError(f"{where}: recovery mode is for a primary that lost its configuration")
        for url in self.trap_destinations:
            check_trap_url(url, where, allow_non_loopback=allow_non_loopback)
        if (
            not isinstance(self.service_assignments, list)
            or len(self.service_assignments) > MAX_ASSIGNMENTS
            or not all(isinstance(a, str) and 0 < len(a) <= 200 and ":" in a for a in self.service_assignments)
        ):
            raise ConfigError(
                f'{where}: service_assignments is a list of up to {MAX_ASSIGNMENTS} "SERVICE: element" strings'
            )
        if not isinstance(self.hooks, dict) or any(
            name not in HOOK_NAMES
            or not isinstance(path, str)
            or not path.startswith("/")
            or len(path) > 400
            or "\x00" in path
            for name, path in self.hooks.items()
        ):
            raise ConfigError(
                f"{where}: hooks maps {' or '.join(HOOK_NAMES)} to a script's absolute path (at most 400 characters)"
            )
        if (
            isinstance(self.hook_timeout, bool)
            or not isinstance(self.hook_timeout, int | float)
            or not (1 <= self.hook_timeout <= 120)
        ):
            raise ConfigError(f"{where}: hook_timeout is seconds from 1 to 120")
        if not isinstance(self.metrics_token, str) or (
            self.metrics_token and not METRICS_TOKEN_RE.match(self.metrics_token)
        ):
            raise ConfigError(
                f"{where}: metrics_token must be 16 to 200 letters, digits or . _ ~ + / = - (or empty: no metrics)"
            )
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["role"] = self.role.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NodeConfig:
        names = set(cls.__dataclass_fields__)
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"node {d.get('name')!r}: unknown keys {sorted(unknown)}")
        return cls(**d)


HOOK_NAMES = ("pre_takeover", "post_takeover")
METRICS_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,200}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def check_trap_url(url: str, where: str, *, allow_non_loopback: bool) -> str:
    m = re.match(r"^https?://([^/:]+)(:\d+)?(/.*)?$", str(url))
    if not m:
        raise ConfigError(f"{where}: trap destination {url!r} is not an http(s) URL")
    host = m.group(1)
    if host == "localhost":
        return url
    if allow_non_loopback and HOSTNAME_RE.match(host) and not re.fullmatch(r"[\d.]+", host):
        pass  # a real network's portal by name (its TLS certificate names it): https://mse.example.net/...
    else:
        host = check_ip(host, f"{where}: trap destination", allow_non_loopback=allow_non_loopback)
        if ipaddress.IPv4Address(host).is_loopback:
            return url
    if not str(url).startswith("https://"):  # events, and the node's signature, never cross a network in cleartext
        raise ConfigError(f"{where}: trap destination {url!r} is off this host: it must be an https:// URL")
    return url


@dataclass
class PairDecl:
    primary: str
    secondary: str
    config: PairConfig


@dataclass
class Fleet:
    nodes: dict[str, NodeConfig]
    pairs: list[PairDecl]
    path: Path | None = None

    def node(self, name: str) -> NodeConfig:
        try:
            return self.nodes[name]
        except KeyError:
            raise ConfigError(
                f"no node named {name!r} in the fleet file (have: {', '.join(self.nodes) or 'none'})"
            ) from None

    def pairs_of(self, name: str) -> list[PairDecl]:
        return [p for p in self.pairs if name in (p.primary, p.secondary)]


NODE_KEYS = {
    "tls_cert",
    "tls_key",
    "hm_interface",
    "direct_interface",
    "vip_driver",
    "name",
    "type",
    "version",
    "role",
    "hm_ip",
    "vip",
    "netmask",
    "password",
    "udi",
    "direct_connect",
    "hostname",
    "domain",
    "timezone",
    "ntp",
    "dns",
    "trap_destinations",
    "port",
    "recovery",
    "service_assignments",
    "metrics_token",
    "hooks",
    "hook_timeout",
}
MAX_ASSIGNMENTS = 1000
PAIR_KEYS = {
    "primary", "secondary", "failover_type", "failback_type", "failover_wait", "stabilisation_seconds",
    "witnesses", "witness_password", "witness_mode",
}  # fmt: skip


def parse_fleet(
    data: dict[str, Any], *, allow_non_loopback: bool = False, allow_short_wait: bool = False, source: str = "fleet"
) -> Fleet:
    agent: dict[str, Any] = data.get("agent", {})
    if not isinstance(agent, dict):
        raise ConfigError(f"{source}: [agent] must be a table")
    default_port = agent.get("port", DEFAULT_PORT)
    default_traps = agent.get("trap_destinations", [])
    unknown_top = set(data) - {"agent", "node", "pair"}
    if unknown_top:
        raise ConfigError(f"{source}: unknown sections {sorted(unknown_top)} (expected [agent], [[node]], [[pair]])")
    raw_nodes: list[Any] = data.get("node", [])
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(f"{source}: no [[node]] entries")
    nodes: dict[str, NodeConfig] = {}
    seen_ips: dict[str, str] = {}
    for i, rn in enumerate(raw_nodes, 1):
        if not isinstance(rn, dict):
            raise ConfigError(f"{source}: [[node]] #{i} is not a table")
        unknown = set(rn) - NODE_KEYS
        if unknown:
            raise ConfigError(f"{source}: [[node]] #{i} has unknown keys {sorted(unknown)}")
        if not isinstance(rn.get("recovery", False), bool):
            raise ConfigError(f"{source}: [[node]] #{i} ({rn.get('name', '?')}): recovery must be true or false")
        missing = {"name", "type", "version", "role", "hm_ip", "password"} - set(rn)
        if missing:
            raise ConfigError(f"{source}: [[node]] #{i} ({rn.get('name', '?')}) is missing {sorted(missing)}")
        try:
            cfg = NodeConfig(
                name=rn["name"],
                device_type=rn["type"],
                version=str(rn["version"]),
                role=rn["role"],
                hm_ip=rn["hm_ip"],
                password=rn["password"],
                vip=rn.get("vip"),
                netmask=rn.get("netmask"),
                udi=rn.get("udi", ""),
                direct_connect=rn.get("direct_connect"),
                hostname=rn.get("hostname", ""),
                domain=rn.get("domain", "localdomain"),
                timezone=rn.get("timezone", "UTC"),
                ntp=rn.get("ntp", ""),
                dns=rn.get("dns", ""),
                port=int(rn["port"] if "port" in rn else default_port),
                trap_destinations=list(rn.get("trap_destinations", default_traps) or []),
                recovery=rn.get("recovery", False),
                hm_interface=rn.get("hm_interface"),
                direct_interface=rn.get("direct_interface"),
                vip_driver=rn.get("vip_driver", VIP_DRIVER_LOOPBACK),
                tls_cert=rn.get("tls_cert"),
                tls_key=rn.get("tls_key"),
                service_assignments=rn.get("service_assignments", []),
                metrics_token=rn.get("metrics_token", agent.get("metrics_token")) or "",
                hooks=cast(dict, rn.get("hooks", agent.get("hooks", {}))),  # checked by validate
                hook_timeout=cast(float, rn.get("hook_timeout", agent.get("hook_timeout", 10.0))),
            ).validate(allow_non_loopback=allow_non_loopback)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        if cfg.name in nodes:
            raise ConfigError(f"{source}: two nodes are named {cfg.name!r}")
        for addr in filter(None, (cfg.hm_ip, cfg.vip, cfg.direct_connect)):
            if addr in seen_ips:
                raise ConfigError(f"{source}: address {addr} is used by both {seen_ips[addr]!r} and {cfg.name!r}")
            seen_ips[addr] = cfg.name
        nodes[cfg.name] = cfg
    pairs: list[PairDecl] = []
    backed: dict[str, list[str]] = {}
    paired_primaries: set[str] = set()
    for i, rp in enumerate(data.get("pair", []), 1):
        unknown = set(rp) - PAIR_KEYS
        if unknown:
            raise ConfigError(f"{source}: [[pair]] #{i} has unknown keys {sorted(unknown)}")
        try:
            prim, sec = nodes[rp["primary"]], nodes[rp["secondary"]]
        except KeyError as e:
            raise ConfigError(f"{source}: [[pair]] #{i} names an unknown node {e}") from None
        if prim.role is not Role.PRIMARY or sec.role is not Role.SECONDARY:
            raise ConfigError(f"{source}: [[pair]] #{i}: {prim.name} must be a primary and {sec.name} a secondary")
        if prim.version != sec.version:
            raise ConfigError(f"{source}: [[pair]] #{i}: primary and secondary must run the same software version")
        if prim.name in paired_primaries:
            raise ConfigError(f"{source}: [[pair]] #{i}: {prim.name} already has a secondary")
        paired_primaries.add(prim.name)
        backed.setdefault(sec.name, []).append(prim.name)
        if len(backed[sec.name]) > 2:
            raise ConfigError(f"{source}: [[pair]] #{i}: a secondary can back at most two primaries")
        try:
            pc = PairConfig(
                Mode.parse(rp.get("failover_type", "Manual")),
                Mode.parse(rp.get("failback_type", "Manual")),
                rp.get("failover_wait", 10),
                rp.get("stabilisation_seconds", 1800),
                allow_short_wait=allow_short_wait,
                witnesses=_witness_list(rp.get("witnesses", [])),
                witness_password=rp.get("witness_password", ""),
                witness_mode=rp.get("witness_mode", "safe"),
            )
        except ValueError as e:
            raise ConfigError(f"{source}: [[pair]] #{i}: {e}") from None
        pairs.append(PairDecl(prim.name, sec.name, pc))
    return Fleet(nodes, pairs)


def _witness_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ValueError('witnesses must be a list of "IP:PORT"')
    return tuple(value)


def load_fleet(path: str | Path, **kw) -> Fleet:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"fleet file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"fleet file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read fleet file {path}: {e}") from None
    fleet = parse_fleet(data, source=str(path), **kw)
    fleet.path = path
    return fleet
