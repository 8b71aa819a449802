"""The two distributions, built and installed as an operator would (issue 12, Packaging).

The wheels are built once for this module by `distributions/build.py` (a clean copy of
the tree, pip and setuptools). Each venv is new, lies outside the checkout and is made
from the base interpreter, so nothing of .venv shows through; pip installs into it with
the machine's own index configuration, as `pip install` on an appliance would. The
installed commands run from a directory outside the checkout, with no PYTHONPATH, against
a real agent on a loopback address.
"""

from __future__ import annotations

import email.parser
import os
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import nodeagent

from .agentutil import PORT, REPO, free_subnet, wait_until

pytestmark = pytest.mark.slow

VERSION = nodeagent.__version__
AGENT_SCRIPTS = {"mse-agent", "mse-setup", "gethainfo", "getserverinfo"}


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    r = subprocess.run(
        [sys.executable, str(REPO / "distributions" / "build.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (agent,) = out.glob("mse_node_agent-*.whl")
    (portal,) = out.glob("mseportal-*.whl")
    return {"agent": agent, "portal": portal}


def new_venv(where: Path, *wheels: Path) -> Path:
    """A fresh venv at where with these wheels installed (their dependencies from the index); its bin/."""
    assert not where.resolve().is_relative_to(REPO)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip", "--python", str(where / "bin" / "python")]
    r = subprocess.run(
        [*pip, "install", "--quiet", *map(str, wheels)],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return where / "bin"


def run(bindir: Path, *args: str, cwd: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    """An installed command, from cwd, with the venv's bin/ first on PATH and nothing of the checkout."""
    r = subprocess.run(
        [str(bindir / args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8", **(env or {})},
    )
    if ok:
        assert r.returncode == 0, f"{args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def metadata(wheel: Path, file: str = "METADATA") -> str:
    dist_info = wheel.name.split("-")[0] + f"-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as z:
        return z.read(f"{dist_info}/{file}").decode()


def key(req: str | Requirement) -> tuple:
    r = req if isinstance(req, Requirement) else Requirement(req)
    return canonicalize_name(r.name), tuple(sorted(r.extras)), str(r.specifier), str(r.marker or "")


def requires_dist(wheel: Path) -> set[tuple]:
    return {key(v) for v in email.parser.Parser().parsestr(metadata(wheel)).get_all("Requires-Dist", [])}


def requirements_file(name: str) -> tuple[set[tuple], list[str]]:
    """(the requirements a file lists, the files it includes with -r)."""
    reqs, included = set(), []
    for line in (REPO / "requirements" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            included.append(line[3:].strip())
        elif line:
            reqs.add(key(line))
    return reqs, included


def package_files(*packages: str) -> set[str]:
    """The checkout's .py files of these packages and their subpackages, tests excepted."""
    out = set()
    for pkg in packages:
        for f in (REPO / pkg).rglob("*.py"):
            rel = f.relative_to(REPO)
            if "tests" not in rel.parts and (f.parent / "__init__.py").exists():
                out.add(rel.as_posix())
    return out


def data_files(tree: str, under: str) -> set[str]:
    return {f"{under}/{f.relative_to(REPO / tree).as_posix()}" for f in (REPO / tree).rglob("*") if f.is_file()}


def nothing_else(files: list[str], allowed: tuple[str, ...]) -> None:
    stray = [f for f in files if not f.startswith(allowed)]
    assert not stray, f"outside {allowed}: {stray}"
    for f in files:
        parts = f.split("/")
        assert "tests" not in parts and "__pycache__" not in parts and not f.endswith((".pyc", ".pem")), f
        assert parts[0] not in ("var", ".venv", "staticfiles", "dist", "build"), f


# ---------------------------------------------------------------- the wheels
def test_the_agent_wheel_is_the_agent_alone_with_no_django(wheels):
    # given the agent's wheel
    whl = wheels["agent"]
    files = names(whl)
    # then it holds the nodeagent package, every module of it, and no tests
    nothing_else(files, ("nodeagent/", f"mse_node_agent-{VERSION}.dist-info/"))
    assert {f for f in files if f.endswith(".py")} == package_files("nodeagent")
    # and it needs what requirements/agent.txt lists, aiohttp, and nothing of Django
    listed, included = requirements_file("agent.txt")
    assert included == [] and requires_dist(whl) == listed
    assert [r for r in requires_dist(whl) if "django" in r[0]] == []
    assert "django" not in metadata(whl).lower()
    # and it names the four commands
    scripts = metadata(whl, "entry_points.txt")
    assert {line.split(" = ")[0] for line in scripts.splitlines() if " = " in line} == AGENT_SCRIPTS


def test_the_portal_wheel_holds_both_apps_templates_and_static_files_and_pins_the_agent(wheels):
    # given the portal's wheel
    whl = wheels["portal"]
    files = names(whl)
    # then it holds the project, the app with every subpackage (migrations, commands, ...),
    # and the project-level templates and static files inside mseportal/; no tests, no keys
    nothing_else(files, ("mseportal/", "hapairs/", f"mseportal-{VERSION}.dist-info/"))
    assert {f for f in files if f.endswith(".py")} == package_files("mseportal", "hapairs")
    assert data_files("templates", "mseportal/templates") <= set(files)
    assert data_files("static", "mseportal/static") <= set(files)
    # and it needs requirements/base.txt, with its `-r agent.txt` as the agent at this release
    listed, included = requirements_file("base.txt")
    assert included == ["agent.txt"]
    # and its one extra, ldap, is requirements/ldap.txt
    ldap, _ = requirements_file("ldap.txt")
    ldap_extra = {(name, extras, spec, 'extra == "ldap"') for name, extras, spec, _marker in ldap}
    assert requires_dist(whl) == listed | {key(f"mse-node-agent=={VERSION}")} | ldap_extra


# ---------------------------------------------------------------- installed
def test_the_agent_installs_alone_and_its_commands_run_from_another_directory(wheels, tmp_path):
    # given a fresh venv with the agent's wheel alone, and a directory that is no checkout
    bindir = new_venv(tmp_path / "venv", wheels["agent"])
    here = tmp_path / "appliance"
    here.mkdir()
    # then Django is not there, and nodeagent comes from the venv
    r = run(bindir, "python", "-c", "import django", cwd=here, ok=False)
    assert r.returncode == 1 and "No module named 'django'" in r.stderr
    where = run(bindir, "python", "-c", "import nodeagent; print(nodeagent.__file__)", cwd=here).stdout
    assert where.startswith(str(tmp_path / "venv")), where
    assert run(bindir, "python", "-m", "nodeagent", "gethainfo", "--help", cwd=here).stdout.startswith("usage:")
    # and each command answers
    out = run(bindir, "mse-agent", "--help", cwd=here).stdout
    assert out.startswith("usage: mse-agent") and "{serve,farm,witness}" in out
    r = run(bindir, "mse-agent", "setup", cwd=here, ok=False)
    assert r.returncode == 2 and "invalid choice: 'setup'" in r.stderr
    for cmd in ("serve", "farm", "witness"):
        assert "--help" in run(bindir, "mse-agent", cmd, "--help", cwd=here).stdout
    for cmd in ("mse-setup", "gethainfo", "getserverinfo"):
        assert "--state-dir" in run(bindir, cmd, "--help", cwd=here).stdout

    # when the appliance is set up as the seed's setup.sh does, and its Health Monitor started
    net = free_subnet()
    sd = here / "state"
    # fmt: off
    out = run(
        bindir, "mse-setup", "--state-dir", str(sd), "--yes", "--name", "mse1", "--role", "1",
        "--type", "VA-High", "--version", "8.0.110.0", "--hm-ip", f"{net}.2", "--direct-connect", "none",
        "--vip", f"{net}.1", "--netmask", "255.255.255.0", "--recovery", "no", "--password", "pw-mse1-pkg",
        cwd=here,
    ).stdout
    # fmt: on
    assert "-----BEGIN-----" in out and f"Role=1, Health Monitor Interface=eth0, address={net}.2" in out
    log = open(here / "agent.log", "wb")
    agent = subprocess.Popen(
        [str(bindir / "mse-agent"), "serve", "--state-dir", str(sd)],
        cwd=here,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": f"{bindir}:/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    try:
        wait_until(lambda: _listens(f"{net}.2", PORT) or agent.poll() is not None, timeout=20, what="the agent")
        assert agent.poll() is None, (here / "agent.log").read_text()
        # then gethainfo and getserverinfo print the seed's output, read from the running agent
        ha = run(bindir, "gethainfo", "--state-dir", str(sd), cwd=here).stdout
        assert ha.startswith("Health Monitor is running. Retrieving HA related information\n")
        for line in ("Server role: Primary", f"Health Monitor IP Address: {net}.2", f"Virtual IP Address: {net}.1"):
            assert f"\n{line}\n" in ha, ha
        assert ha.endswith("Number of paired peers: 0\n"), ha
        si = run(bindir, "getserverinfo", "--state-dir", str(sd), cwd=here).stdout
        assert si.startswith("Health Monitor is running\nRetrieving MSE Services status.\n")
        assert f"\nHealth Monitor Ip Address: {net}.2\n" in si and "\nHigh Availability Role: 1\n" in si
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)
        log.close()
    # and when it is stopped, gethainfo reads the last saved configuration
    assert agent.returncode == 0, (here / "agent.log").read_text()
    ha = run(bindir, "gethainfo", "--state-dir", str(sd), cwd=here).stdout
    assert ha.startswith("Health Monitor is not running. Following information is from the last saved configuration\n")
    assert run(bindir, "getserverinfo", "--state-dir", str(sd), cwd=here).stdout == "Health Monitor is not running\n"


def test_the_portal_installs_beside_the_agent_and_finds_its_templates_and_static_files(wheels, tmp_path):
    # given a fresh venv with both wheels (the portal pins the agent at this release)
    bindir = new_venv(tmp_path / "venv", wheels["agent"], wheels["portal"])
    here = tmp_path / "server"
    here.mkdir()
    env = {"DJANGO_SETTINGS_MODULE": "mseportal.settings", "DEBUG": "1", "MSEPORTAL_VAR_DIR": str(here / "var")}
    # when the operator checks and migrates the portal, from a directory that is no checkout
    assert "no issues" in run(bindir, "python", "-m", "django", "check", cwd=here, env=env).stdout
    run(bindir, "python", "-m", "django", "migrate", "--no-input", cwd=here, env=env)
    # then the pages render from the installed templates, with the installed static files
    probe = """
import django; django.setup()
import hapairs, mseportal, nodeagent
from django.contrib.staticfiles import finders
from django.template.loader import get_template
from django.test import Client
for m in (hapairs, mseportal, nodeagent):
    print(m.__file__)
for t in ("base.html", "hapairs/mse_list.html", "hapairs/reports/health_report.txt", "registration/login.html"):
    print(get_template(t).origin.name)
print(finders.find("css/portal.css"))
page = Client(HTTP_HOST="localhost").get("/login/")
print(page.status_code, b'name="password"' in page.content)
"""
    out = run(bindir, "python", "-c", probe, cwd=here, env=env).stdout.splitlines()
    site = str(tmp_path / "venv")
    assert all(line.startswith(site) for line in out[:-1]), out
    assert out[3].endswith("mseportal/templates/base.html") and out[7].endswith("mseportal/static/css/portal.css")
    assert out[-1] == "200 True", out


def _listens(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False
