"""The set-up wizard (``setup``), as the seed's ``setup.sh`` asks (MSE-HA-SPEC §3)."""

from __future__ import annotations

import sys
from pathlib import Path

from . import tlsid
from .config import DEVICE_TYPES, VIP_DRIVER_LOOPBACK, ConfigError, NodeConfig
from .errors import EXIT_FAIL, CliError
from .protocol import DEFAULT_PORT, Role
from .store import StateDir, pid_running, read_json

ROLE_SWITCH_REFUSAL = (
    "*** User has switched roles for this MSE. MSE must be stopped before switching roles.\n"
    "*** Please stop MSE and then re-run setup.sh.\n"
    "ERROR: One or more of the requested configurations was not applied."
)


def _ask(prompt: str, default: str | None, interactive: bool, value: str | None) -> str:
    if value is not None:
        return value
    if not interactive:
        if default is None:
            raise CliError(f"non-interactive set-up: missing a value for {prompt!r}")
        return default
    shown = f" [{default}]" if default is not None else ""
    try:
        ans = input(f"{prompt}{shown}: ").strip()
    except EOFError:
        raise CliError("set-up aborted (end of input)") from None
    return ans or (default or "")


def cmd_setup(a) -> int:
    interactive = not a.yes
    sd_path = Path(a.state_dir) if a.state_dir else None
    existing = read_json(sd_path / "config.json") if sd_path else None
    ex = existing or {}
    name = _ask("Enter a host name", ex.get("name") or (a.name and None) or "mse", interactive, a.name)
    if sd_path is None:
        sd_path = Path.cwd() / "var" / "nodeagent" / name
        existing = read_json(sd_path / "config.json")
        ex = existing or {}
    domain = _ask("Enter a domain name for the network", ex.get("domain", "localdomain"), interactive, a.domain)
    role_in = _ask(
        "Configure High Availability: Select role [1 for Primary, 2 for Secondary]",
        {"primary": "1", "secondary": "2"}.get(ex.get("role", ""), "1"),
        interactive,
        a.role,
    )
    role = {"1": "primary", "2": "secondary", "primary": "primary", "secondary": "secondary"}.get(
        role_in.strip().lower()
    )
    if role is None:
        raise CliError("role must be 1 (Primary) or 2 (Secondary)")
    if existing and existing.get("role") != role and _node_running(sd_path):
        print(ROLE_SWITCH_REFUSAL, file=sys.stderr)
        return EXIT_FAIL
    device_type = _ask(
        "Appliance type (" + "/".join(DEVICE_TYPES) + ")", ex.get("device_type", "VA-High"), interactive, a.device_type
    )
    version = _ask("Software version", ex.get("version", "8.0.110.0"), interactive, a.version)
    # the seed's order: the interfaces, the VIP, recovery mode, then the interfaces' addresses
    hm_iface = _ask(
        "Select Health Monitor interface [eth0/eth1]", ex.get("hm_interface") or "eth0", interactive, a.hm_interface
    )
    dc_iface = _ask(
        "Select direct connect interface [eth0/eth1/none]",
        ex.get("direct_interface") or "none",
        interactive,
        a.direct_interface,
    )
    if dc_iface.lower() == "none":
        dc_iface = ""
    vip = netmask = None
    recovery = "no"
    if role == "primary":
        vip = _ask("Enter Virtual IP address", ex.get("vip"), interactive, a.vip)
        netmask = _ask(
            f"Enter the network mask for IP address {vip}", ex.get("netmask", "255.255.255.0"), interactive, a.netmask
        )
        recovery = _ask("Start MSE in recovery mode (yes/no)", "no", interactive, a.recovery)
        if recovery.lower() not in ("yes", "no"):
            raise CliError("recovery mode must be yes or no")
    hm_ip = _ask(f"Enter {hm_iface} IP address (the Health Monitor address)", ex.get("hm_ip"), interactive, a.hm_ip)
    dc = "none"
    if dc_iface:
        dc = _ask(
            f"Enter {dc_iface} IP address (direct connect)", ex.get("direct_connect"), interactive, a.direct_connect
        )
    vip_driver = a.vip_driver or ex.get("vip_driver") or VIP_DRIVER_LOOPBACK
    password = _ask("Enter the admin password", ex.get("password"), interactive, a.password)
    tz = _ask("Time zone", ex.get("timezone", "UTC"), interactive, a.timezone)
    ntp = _ask("NTP servers", ex.get("ntp", ""), interactive, a.ntp)
    dns = _ask("DNS servers", ex.get("dns", ""), interactive, a.dns)
    try:
        cfg = NodeConfig(
            name=name,
            device_type=device_type,
            version=version,
            role=Role(role),
            hm_ip=hm_ip,
            password=password,
            vip=vip,
            netmask=netmask,
            direct_connect=None if dc.lower() == "none" else dc,
            domain=domain,
            timezone=tz,
            ntp=ntp,
            dns=dns,
            port=a.port or ex.get("port", DEFAULT_PORT),
            recovery=recovery.lower() == "yes",
            udi=ex.get("udi", "") if ex.get("name") == name else "",
            hm_interface=hm_iface,
            direct_interface=dc_iface or None,
            vip_driver=vip_driver,
        ).validate()
    except ConfigError as e:
        raise CliError(str(e)) from None
    summary = [
        "-----BEGIN-----",
        f"Host name={cfg.name}",
        f"Domain={cfg.domain}",
        f"Role={cfg.role.number}, Health Monitor Interface={cfg.hm_interface}, address={cfg.hm_ip}",
        f"Direct connect interface={cfg.direct_interface or 'none'}"
        + (f", address={cfg.direct_connect}" if cfg.direct_connect else ""),
        f"Virtual IP driver={cfg.vip_driver}",
    ]
    if cfg.vip:
        summary.append(f"Virtual IP Address={cfg.vip}, Virtual IP Netmask={cfg.netmask}")
        summary.append(f"Recovery mode={'yes' if cfg.recovery else 'no'}")
    summary += [f"Time zone={cfg.timezone}", f"NTP servers={cfg.ntp or 'none'}", "-----END-----"]
    print("\n".join(summary))
    if interactive:
        ans = (
            _ask(
                'You may enter "yes" to proceed with configuration changes, "no" to abort, or "^" to go back',
                "no",
                True,
                None,
            )
            .strip()
            .lower()
        )
        if ans == "^":
            return cmd_setup(a)
        if ans != "yes":
            print("Configuration changes aborted.")
            return EXIT_FAIL
    StateDir(sd_path).ensure().save("config.json", cfg.to_dict())
    print(f"Configuration saved to {sd_path / 'config.json'}")
    # the HM port's TLS identity, made now (or the operator's, checked): the portal shows this
    # fingerprint when the appliance is added; compare the two before trusting it
    try:
        identity = tlsid.ensure(
            sd_path,
            name=cfg.name,
            addresses=cfg.addresses,
            cert_file=cfg.tls_cert,
            key_file=cfg.tls_key,
        )
    except ValueError as e:
        raise CliError(f"TLS: {e}") from None
    print(f"TLS certificate {identity.cert_path} ({'made now' if identity.made else 'kept'})")
    print(f"TLS certificate fingerprint (SHA-256): {identity.fingerprint}")
    return 0


def _node_running(sd: Path) -> bool:
    try:
        pid = int((sd / "agent.pid").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return pid_running(pid)
