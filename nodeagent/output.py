"""Text output of ``gethainfo`` and ``getserverinfo`` exactly as MSE-HA-SPEC §6 (pure)."""

from __future__ import annotations

from datetime import datetime

HDR_RUNNING = "Health Monitor is running. Retrieving HA related information"
HDR_NOT_RUNNING = "Health Monitor is not running. Following information is from the last saved configuration"


def _block(title: str) -> list[str]:
    return ["-----", title, "-----"]


def format_hainfo(info: dict, *, running: bool) -> str:
    """``info`` is the HA info of the API (or the same shape rebuilt from the state dir)."""
    secondary = info["role"] == "secondary"
    lines = [HDR_RUNNING if running else HDR_NOT_RUNNING, ""]
    lines += _block("Base high availability configuration for this server")
    lines += [
        f"Server role: {'Secondary' if secondary else 'Primary'}",
        f"Health Monitor IP Address: {info['hm_ip']}",
        f"Virtual IP Address: {'Not Applicable for a secondary' if secondary else (info.get('vip') or 'Not configured')}",
        f"Version: {info['version']}",
        f"UDI: {info['udi']}",
        f"Number of paired peers: {len(info['peers'])}",
    ]
    for i, p in enumerate(info["peers"], 1):
        lines.append("")
        lines += _block(f"Peer configuration#: {i}")
        wait = p["failover_wait"]
        lines += [
            f"Health Monitor IP Address {p['hm_ip']}",
            f"Virtual IP Address: {p['vip']}",
            f"Version: {p['version']}",
            f"UDI: {p['udi']}",
            f"Failover type: {p['failover_type']}",
            f"Failback type: {p['failback_type']}",
            f"Failover wait time (seconds): {int(wait) if float(wait).is_integer() else wait}",
            f"Instance database name: {p['instance_db_name']}",
            f"Instance database port: {p['instance_db_port']}",
            f"Dataguard configuration name: {p['dataguard_name']}",
            f"Primary database alias: {p['primary_db_alias']}",
            f"Direct connect used: {'Yes' if p['direct_connect'] else 'No'}",
        ]
        if running and p.get("running", True):
            lines += [f"Heartbeat status: {p['heartbeat']}", f"Current state: {p['state']}"]
        else:
            lines.append(f"Last shutdown state: {p['state']}")
    return "\n".join(lines) + "\n"


def _t(iso: str | None) -> str:
    if not iso:
        return "null"
    try:
        return datetime.fromisoformat(iso).strftime("%a %b %d %H:%M:%S %Z %Y").replace("  ", " ")
    except ValueError:
        return iso


def format_serverinfo(info: dict | None, *, running: bool) -> str:
    if not running or info is None:
        return "Health Monitor is not running\n"
    lines = ["Health Monitor is running", "Retrieving MSE Services status."]
    if not info.get("services_running", True):
        lines.append("MSE services are down")
    elif info.get("dormant"):
        lines.append("MSE services are up and in DORMANT mode, getting the status")
    else:
        lines.append("MSE services are up, getting the status")
    lines.append("")
    lines += _block("Server Config")
    lines += [
        f"Product name: {info['product_name']}",
        f"Version: {info['version']}",
        f"Health Monitor Ip Address: {info['hm_ip']}",
        f"High Availability Role: {info['ha_role']}",
        f"Hw Version: {info['hw_version']}",
        f"Hw Product Identifier: {info['product_identifier']}",
        f"Hw Serial Number: {info['serial_number']}",
        "HTTPS: null",
        f"Legacy Port: {info['legacy_port']}",
        "Log Modules: -1",
        f"Log Level: {info['log_level']}",
        f"Days to keep events: {info['days_to_keep_events']}",
        f"Session timeout in mins: {info['session_timeout_mins']}",
        f"DB backup in days: {info['db_backup_days']}",
        "",
    ]
    lines += _block("Services")
    for s in info["services"]:
        lines += [
            f"Service Name: {s['name']}",
            f"Service Version: {s['version']}",
            f"Admin Status: {s['admin_status']}",
            f"Operation Status: {s['operation_status']}",
            "",
        ]
    lines += _block("Server Monitor")
    lines += [
        f"Server start time: {_t(info['start_time'])}",
        f"Server current time: {_t(info['current_time'])}",
        f"Server timezone: {info['timezone']}",
        "Server timezone offset (mins): 0",
        f"Restarts: {info['restarts'] if info['restarts'] else 'null'}",
        f"Used Memory (MB): {info['used_memory_mb']}",
        f"DB disk size (MB): {info['db_disk_size_mb']}",
        "",
    ]
    lines += _block("Active Sessions")
    for s in info.get("active_sessions", []):
        lines += [f"Session ID: {s.get('id')}", f"Session IP Address: {s.get('ip')}", ""]
    lines.append("")
    lines += _block("Default Trap Destinations")
    for i, t in enumerate(info.get("trap_destinations", []), 1):
        lines += [
            "",
            f"Trap Destination - {i}",
            "-----",
            f"IP Address: {t['url']}",
            f"Last Updated: {_t(t.get('last_updated'))}",
        ]
    lines.append("")
    n = info["active_elements"]
    lines += [
        f"Active Elements(Wireless Clients, Rogue APs, Rogue Clients, Interferers, Wired Clients, Tags) Limit: {info['element_limit']}",
        f"Active Elements: {n}",
        f"Wireless Clients Not Tracked due to the limiting: {info['elements_not_tracked']}",
    ]
    return "\n".join(lines) + "\n"
