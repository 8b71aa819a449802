"""Fleet files, the state directory, the set-up wizard and the CLI's error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nodeagent.config import ConfigError, check_trap_url, load_fleet, parse_fleet
from nodeagent.output import format_hainfo
from nodeagent.store import atomic_write_json

from .agentutil import REPO, free_subnet, node_toml

DEMO = REPO / "fleet" / "demo.toml"
DEMO_PAIRED = REPO / "fleet" / "demo-paired.toml"


def cli(*args, cwd=None, input=None):
    return subprocess.run(
        [sys.executable, "-m", "nodeagent", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=30,
        input=input,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def node(**kw):
    d = {
        "name": "a",
        "type": "VA-High",
        "version": "8.0.110.0",
        "role": "primary",
        "hm_ip": "127.9.9.2",
        "vip": "127.9.9.1",
        "netmask": "255.255.255.0",
        "password": "secret",
    }
    d.update(kw)
    return {k: v for k, v in d.items() if v is not None}


def sec(**kw):
    return node(**{"name": "b", "role": "secondary", "hm_ip": "127.9.9.3", "vip": None, "netmask": None, **kw})


def test_demo_fleets_are_the_seed_scenarios_on_loopback():
    demo, paired = load_fleet(DEMO), load_fleet(DEMO_PAIRED)
    assert demo.pairs == [] and set(demo.nodes) == set(paired.nodes)
    assert len(paired.pairs) == 5
    for cfg in paired.nodes.values():
        for addr in filter(None, (cfg.hm_ip, cfg.vip, cfg.direct_connect)):
            assert addr.startswith("127."), addr
    n = paired.nodes
    assert (n["mse1"].vip, n["mse1"].hm_ip, n["mse2"].hm_ip) == ("127.10.10.11", "127.10.10.12", "127.10.10.13")
    assert n["mse3355-1"].direct_connect == "127.1.1.1" and n["mse3355-2"].direct_connect == "127.1.1.2"
    assert (n["NicoMSE"].hm_ip, n["NicoMSE"].vip, n["NicoMSE2"].hm_ip) == (
        "127.48.39.238",
        "127.48.39.224",
        "127.48.39.240",
    )
    two_to_one = [p for p in paired.pairs if p.secondary == "mse3355-3"]
    assert {p.primary for p in two_to_one} == {"mse3310", "mse3350"}
    auto = next(p for p in paired.pairs if p.primary == "mse3355-1")
    assert auto.config.failover_type.value == "Automatic" and auto.config.failback_type.value == "Manual"


@pytest.mark.parametrize(
    "nodes,pairs,msg",
    [
        ([node(hm_ip="10.10.10.12")], [], "not a loopback address"),
        ([node(vip="127.9.8.1")], [], "same subnet"),
        ([node(vip="127.9.9.2")], [], "must be different"),
        ([node(vip=None)], [], "needs vip and netmask"),
        ([node(type="3320")], [], "type must be one of"),
        ([node(version="eight")], [], "version must look like"),
        ([node(role="tertiary")], [], "role must be primary or secondary"),
        ([node(), node(hm_ip="127.9.9.5", vip="127.9.9.6")], [], "two nodes are named"),
        ([node(), sec(hm_ip="127.9.9.2")], [], "is used by both"),
        ([node(), sec(version="7.2.103.0")], [{"primary": "a", "secondary": "b"}], "same software version"),
        ([node(), sec()], [{"primary": "b", "secondary": "a"}], "must be a primary"),
        ([node(), sec()], [{"primary": "a", "secondary": "b", "failover_wait": 1}], "between 2 and 120"),
        ([node(), sec()], [{"primary": "a", "secondary": "b", "failover_type": "Sometimes"}], "Manual or Automatic"),
        ([node(), sec()], [{"primary": "a", "secondary": "zz"}], "unknown node"),
        ([node(colour="red")], [], "unknown keys"),
        ([node(trap_destinations=["http://10.0.0.1/x"])], [], "not a loopback"),
        ([node(recovery="yes")], [], "recovery must be true or false"),
        ([node(), sec(recovery=True)], [], "recovery mode is for a primary"),
        ([node(vip_driver="keepalived")], [], "vip_driver must be one of loopback, iproute"),
        ([node(service_assignments="CAS: Floor 1")], [], "service_assignments is a list"),
        ([node(service_assignments=["no colon"])], [], "service_assignments is a list"),
        ([node(service_assignments=[7])], [], "service_assignments is a list"),
        ([node(service_assignments=["CAS: x"] * 1001)], [], "up to 1000"),
        ([node(vip_driver="iproute")], [], "needs hm_interface"),
        ([node(vip_driver="iproute", hm_interface="eth0; reboot")], [], "must be an interface name"),
        ([node(vip_driver="iproute", hm_interface="a" * 16)], [], "must be an interface name"),
        ([node(hm_interface="eth0", direct_interface="eth1")], [], "direct_interface needs direct_connect"),
        ([node(hm_interface="eth0", direct_interface="eth0", direct_connect="127.9.9.9")], [], "must differ"),
        # the loopback driver keeps its loopback-only rule
        ([node(hm_ip="198.18.1.12", vip="198.18.1.11", hm_interface="eth0")], [], "not a loopback address"),
    ],
)
def test_bad_fleets_are_refused_with_a_clear_message(nodes, pairs, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_fleet({"node": nodes, "pair": pairs})


def test_on_real_interfaces_any_address_a_network_gives_is_accepted():
    # given a pair set up as the seed's setup does: HM on eth0, direct connect on eth1
    real = {"vip_driver": "iproute", "hm_interface": "eth0", "direct_interface": "eth1"}
    fleet = parse_fleet(
        {
            "node": [
                node(
                    hm_ip="10.10.10.15",
                    vip="10.10.10.14",
                    direct_connect="1.1.1.1",
                    **real,
                    trap_destinations=["https://10.20.0.5/api/v1/ingest/events"],
                ),
                sec(hm_ip="10.10.10.16", direct_connect="1.1.1.2", **real),
            ],
            "pair": [{"primary": "a", "secondary": "b", "failover_type": "Automatic"}],
        }
    )
    a, b = fleet.nodes["a"], fleet.nodes["b"]
    # then the addresses, interfaces and driver are the node's (parsed only: nothing is contacted)
    assert (a.hm_ip, a.vip, a.direct_connect, a.hm_interface, a.direct_interface) == (
        "10.10.10.15",
        "10.10.10.14",
        "1.1.1.1",
        "eth0",
        "eth1",
    )
    assert a.real_network and b.real_network and b.vip_driver == "iproute"
    # and the default stays the development driver
    assert parse_fleet({"node": [node()]}).nodes["a"].vip_driver == "loopback"


def test_a_metrics_token_is_given_per_node_or_for_all_and_checked():
    fleet = parse_fleet({"agent": {"metrics_token": "t" * 16}, "node": [node(), sec(metrics_token="u" * 20)]})
    assert fleet.nodes["a"].metrics_token == "t" * 16 and fleet.nodes["b"].metrics_token == "u" * 20
    assert parse_fleet({"node": [node()]}).nodes["a"].metrics_token == ""  # no token: metrics off
    for bad in ("short", "has space in it 0123", "x" * 201, 12345678901234567):
        with pytest.raises(ConfigError, match="metrics_token must be"):
            parse_fleet({"node": [node(metrics_token=bad)]})


def test_takeover_hooks_are_named_absolute_paths_with_a_bounded_timeout():
    fleet = parse_fleet({"agent": {"hooks": {"post_takeover": "/opt/hooks/post"}}, "node": [node(), sec(
        hooks={"pre_takeover": "/opt/hooks/fence"}, hook_timeout=30)]})  # fmt: skip
    assert fleet.nodes["a"].hooks == {"post_takeover": "/opt/hooks/post"} and fleet.nodes["a"].hook_timeout == 10
    assert fleet.nodes["b"].hooks == {"pre_takeover": "/opt/hooks/fence"} and fleet.nodes["b"].hook_timeout == 30
    for bad in ({"on_failover": "/x"}, {"pre_takeover": "relative/script"}, {"pre_takeover": 3}, ["/x"],
                {"pre_takeover": "/x\x00y"}):  # fmt: skip
        with pytest.raises(ConfigError, match="hooks maps pre_takeover or post_takeover"):
            parse_fleet({"node": [node(hooks=bad)]})
    for bad in (0, 121, "10", True):
        with pytest.raises(ConfigError, match="hook_timeout is seconds from 1 to 120"):
            parse_fleet({"node": [node(hook_timeout=bad)]})


def test_a_secondary_backs_at_most_two_primaries():
    prims = [node(name=f"p{i}", hm_ip=f"127.9.{i}.2", vip=f"127.9.{i}.1") for i in range(3)]
    with pytest.raises(ConfigError, match="at most two"):
        parse_fleet(
            {
                "node": prims + [sec(hm_ip="127.9.9.9")],
                "pair": [{"primary": f"p{i}", "secondary": "b"} for i in range(3)],
            }
        )


def test_atomic_write_leaves_no_temporary_and_replaces(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]
    assert oct(p.stat().st_mode & 0o777) == "0o600"


def test_atomic_write_survives_a_killed_writers_leftover_and_never_follows_a_symlink(tmp_path):
    import os
    import threading

    p = tmp_path / "sub" / "ha.json"  # the directory is made when missing
    atomic_write_json(p, {"a": 1})
    tmp = p.with_name(f".{p.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    # a killed writer's leftover, readable by all: removed, and the new file is 0600
    tmp.write_text("torn")
    tmp.chmod(0o644)
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2} and not tmp.exists()
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    # a symlink planted at the temporary name: removed, never written through
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    tmp.symlink_to(target)
    atomic_write_json(p, {"a": 3})
    assert json.loads(p.read_text()) == {"a": 3}
    assert target.read_text() == "untouched" and not p.is_symlink()


def test_cli_errors_are_one_line_and_non_zero(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[node]\nname=")
    for args in (
        ["serve", "--fleet", str(bad), "--node", "x"],
        ["serve", "--fleet", str(tmp_path / "missing.toml"), "--node", "x"],
        ["serve", "--fleet", str(DEMO), "--node", "nobody"],
        ["farm", "--fleet", str(bad)],
        ["gethainfo"],
        ["gethainfo", "--host", "127.0.0.1"],
    ):
        r = cli(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.startswith("nodeagent: error:") and "Traceback" not in r.stderr, r.stderr
    r = cli("serve", "--port", "notanumber")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli("fly")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_setup_non_interactive_then_role_switch_refused_while_running(tmp_path):
    sd = tmp_path / "node"
    r = cli(
        "setup",
        "--state-dir",
        str(sd),
        "--yes",
        "--name",
        "mse9",
        "--role",
        "1",
        "--type",
        "VA-High",
        "--version",
        "8.0.110.0",
        "--hm-ip",
        "127.9.7.2",
        "--direct-connect",
        "none",
        "--vip",
        "127.9.7.1",
        "--netmask",
        "255.255.255.0",
        "--recovery",
        "no",
        "--password",
        "pw-mse9",
    )
    assert r.returncode == 0, r.stderr
    assert "-----BEGIN-----" in r.stdout and "-----END-----" in r.stdout
    cfg = json.loads((sd / "config.json").read_text())
    assert cfg["role"] == "primary" and cfg["vip"] == "127.9.7.1"
    # while the node runs (its pid file names a live process) the role cannot be switched
    (sd / "agent.pid").write_text(str(os.getpid()))
    r = cli("setup", "--state-dir", str(sd), "--yes", "--role", "2")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "*** User has switched roles for this MSE. MSE must be stopped before switching roles.",
        "*** Please stop MSE and then re-run setup.sh.",
        "ERROR: One or more of the requested configurations was not applied.",
    ]
    assert json.loads((sd / "config.json").read_text())["role"] == "primary"
    # stopped: allowed
    (sd / "agent.pid").unlink()
    r = cli("setup", "--state-dir", str(sd), "--yes", "--role", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads((sd / "config.json").read_text())["role"] == "secondary"


def test_setup_interactive_answers_in_the_wizard_order(tmp_path):
    sd = tmp_path / "n"
    answers = (
        "\n".join(
            [
                "mse5",
                "example.com",
                "2",
                "VA-Low",
                "8.0.110.0",
                "eth1",
                "none",
                "127.9.6.3",
                "pw-mse5",
                "UTC",
                "",
                "",
                "yes",
            ]
        )
        + "\n"
    )
    r = cli("setup", "--state-dir", str(sd), input=answers)
    assert r.returncode == 0, r.stderr + r.stdout
    cfg = json.loads((sd / "config.json").read_text())
    assert (cfg["name"], cfg["domain"], cfg["role"], cfg["hm_ip"]) == ("mse5", "example.com", "secondary", "127.9.6.3")
    assert (cfg["hm_interface"], cfg["direct_interface"], cfg["vip_driver"]) == ("eth1", None, "loopback")
    assert "Select Health Monitor interface [eth0/eth1]" in r.stdout
    assert "Select direct connect interface [eth0/eth1/none]" in r.stdout
    r = cli(
        "setup",
        "--state-dir",
        str(sd / "x"),
        input="mse6\n\n1\n\n\n\nnone\n127.9.6.8\n\nno\n127.9.6.9\npw-x\n\n\n\nno\n",
    )
    assert r.returncode == 1 and not (sd / "x" / "config.json").exists()


def test_setup_on_a_real_interface_with_a_direct_link(tmp_path):
    # given the seed's 3355 with direct connect on eth1, set up with flags for a real network
    sd = tmp_path / "n"
    r = cli(
        "setup",
        "--state-dir",
        str(sd),
        "--yes",
        "--name",
        "mse3355-1",
        "--role",
        "1",
        "--type",
        "3355",
        "--version",
        "8.0.110.0",
        "--hm-interface",
        "eth0",
        "--direct-interface",
        "eth1",
        "--vip",
        "10.10.10.14",
        "--netmask",
        "255.255.255.0",
        "--recovery",
        "no",
        "--hm-ip",
        "10.10.10.15",
        "--direct-connect",
        "1.1.1.1",
        "--vip-driver",
        "iproute",
        "--password",
        "pw-3355",
    )
    # then it is saved (nothing is contacted) with the interfaces, and the summary says so
    assert r.returncode == 0, r.stderr
    cfg = json.loads((sd / "config.json").read_text())
    assert (cfg["hm_interface"], cfg["direct_interface"], cfg["direct_connect"], cfg["vip_driver"]) == (
        "eth0",
        "eth1",
        "1.1.1.1",
        "iproute",
    )
    assert "Direct connect interface=eth1, address=1.1.1.1" in r.stdout
    # and the same on the loopback driver is refused: its addresses are 127.0.0.0/8 only
    r = cli("setup", "--state-dir", str(sd), "--yes", "--vip-driver", "loopback")
    assert r.returncode == 1 and "not a loopback address" in r.stderr


def test_gethainfo_format_matches_the_seed():
    info = {
        "role": "secondary",
        "hm_ip": "10.10.10.16",
        "vip": None,
        "version": "7.2.103.0",
        "udi": "AIR-MSE-3355-K9:V01:KQ45xx",
        "peers": [
            {
                "hm_ip": "10.10.10.22",
                "vip": "10.10.10.21",
                "version": "7.2.103.0",
                "udi": "AIR-MSE-3350-K9:V01:MXQ839xx",
                "failover_type": "Manual",
                "failback_type": "Manual",
                "failover_wait": 10.0,
                "instance_db_name": "mseos3",
                "instance_db_port": 1524,
                "dataguard_name": "dg_mse3",
                "primary_db_alias": "mseop3s",
                "direct_connect": False,
                "heartbeat": "Up",
                "state": "SECONDARY_ACTIVE",
                "running": True,
            }
        ],
    }
    expected = """Health Monitor is running. Retrieving HA related information

-----
Base high availability configuration for this server
-----
Server role: Secondary
Health Monitor IP Address: 10.10.10.16
Virtual IP Address: Not Applicable for a secondary
Version: 7.2.103.0
UDI: AIR-MSE-3355-K9:V01:KQ45xx
Number of paired peers: 1

-----
Peer configuration#: 1
-----
Health Monitor IP Address 10.10.10.22
Virtual IP Address: 10.10.10.21
Version: 7.2.103.0
UDI: AIR-MSE-3350-K9:V01:MXQ839xx
Failover type: Manual
Failback type: Manual
Failover wait time (seconds): 10
Instance database name: mseos3
Instance database port: 1524
Dataguard configuration name: dg_mse3
Primary database alias: mseop3s
Direct connect used: No
Heartbeat status: Up
Current state: SECONDARY_ACTIVE
"""
    assert format_hainfo(info, running=True) == expected
    down = format_hainfo(info, running=False)
    assert down.startswith(
        "Health Monitor is not running. Following information is from the last saved configuration\n"
    )
    assert down.endswith("Direct connect used: No\nLast shutdown state: SECONDARY_ACTIVE\n")


def test_recovery_mode_is_read_from_the_fleet():
    fleet = parse_fleet({"node": [node(recovery=True)]})
    assert fleet.nodes["a"].recovery is True
    assert parse_fleet({"node": [node()]}).nodes["a"].recovery is False


@pytest.mark.parametrize(
    "url,real_network,ok",
    [
        ("https://mse.example.net/api/v1/ingest/events", True, True),  # a real network's portal, by name
        ("https://mse.example.net/api/v1/ingest/events", False, False),  # loopback only on a dev machine
        ("http://localhost:8000/api/v1/ingest/events", False, True),
        ("https://192.0.2.50/x", True, True),
        ("https://999.1.1.1/x", True, False),  # neither an address nor a host name
        ("https://bad_host/x", True, False),
        ("http://mse.example.net/api/v1/ingest/events", True, False),  # off the host: https only
        ("http://192.0.2.50/x", True, False),
        ("http://127.0.0.1:8000/x", True, True),
    ],
)
def test_a_trap_destination_on_a_real_network_may_name_the_portal_by_host_name(url, real_network, ok):
    if ok:
        assert check_trap_url(url, "node n", allow_non_loopback=real_network) == url
    else:
        with pytest.raises(ConfigError):
            check_trap_url(url, "node n", allow_non_loopback=real_network)


def test_serve_with_an_unusable_tls_certificate_says_which_file_and_why(tmp_path):
    fleet = tmp_path / "fleet.toml"
    missing = tmp_path / "nowhere"
    fleet.write_text(
        node_toml("tlsbad", "3355", "secondary", f"{free_subnet()}.5", "pw-tls-bad")
        + f'tls_cert = "{missing}/cert.pem"\ntls_key = "{missing}/key.pem"\n'
    )
    r = cli("serve", "--fleet", str(fleet), "--node", "tlsbad", "--state-dir", str(tmp_path / "sd"))
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "node tlsbad: TLS:" in r.stderr and "cert.pem: not a PEM certificate" in r.stderr, r.stderr


def test_the_farm_collects_what_its_start_up_froze_in_flight():
    """A farm freezes its start-up's objects out of later collections; the objects of
    requests still in flight then were frozen too, and their cycles, once those requests end,
    must still be collected (cli._refreeze, 30 s after the start). Fails without it: the
    frozen cycle stays alive."""
    import gc
    import weakref

    from nodeagent import cli

    class InFlight:
        pass

    a, b = InFlight(), InFlight()
    a.other, b.other = b, a  # a cycle, as a task and its coroutine's frame are
    gone = weakref.ref(a)
    gc.collect()
    gc.freeze()
    try:
        del a, b  # the request ended after the freeze
        gc.collect()
        assert gone() is not None, "frozen: not collected by an ordinary collection"
        cli._refreeze()
        assert gone() is None
    finally:
        gc.unfreeze()
