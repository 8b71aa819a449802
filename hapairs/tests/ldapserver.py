"""A real OpenLDAP server (Debian's slapd) for the tests, on loopback, in a temporary folder.

`Directory(tmp_path).start()` writes a slapd.conf (mdb database, suffix dc=mse,dc=test),
starts slapd on a free 127.0.0.1 port, and adds three users and three groups:

* ``olga`` (password ``olga-pw-1``) in cn=mse-operators;
* ``moritz`` (``moritz-pw-1``) in cn=mse-monitors;
* ``nora`` (``nora-pw-1``) in cn=other-staff only: no role.

`skip_reason()` says why the LDAP tests cannot run here (no slapd, no python-ldap); with
``MSEPORTAL_REQUIRE_LDAP=1`` (CI) they fail instead of skipping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from hapairs.tests.ports import free_port

SUFFIX = "dc=mse,dc=test"
ROOT_DN, ROOT_PW = f"cn=admin,{SUFFIX}", "root-pw-for-tests"
USERS = {"olga": ("olga-pw-1", "Olga", "Operator"), "moritz": ("moritz-pw-1", "Moritz", "Monitor")}
USERS["nora"] = ("nora-pw-1", "Nora", "Nobody")
GROUPS = {"mse-operators": ["olga"], "mse-monitors": ["moritz"], "other-staff": ["nora"], "mse-admins": []}
SLAPD = "/usr/sbin/slapd"
SCHEMA = Path("/etc/ldap/schema")


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{SUFFIX}"


def group_dn(cn: str) -> str:
    return f"cn={cn},ou=groups,{SUFFIX}"


def skip_reason() -> str:
    if not Path(SLAPD).exists() or not (SCHEMA / "core.schema").exists():
        return "no slapd here (apt-get install slapd; make test installs it as root)"
    try:
        import django_auth_ldap  # noqa: F401
        import ldap  # noqa: F401
    except ImportError:
        return "python-ldap/django-auth-ldap not installed (requirements/ldap.txt; needs libldap2-dev libsasl2-dev)"
    return ""


class Directory:
    def __init__(self, folder: Path):
        self.folder = folder / "slapd"
        self.port = free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Directory:
        db = self.folder / "db"
        db.mkdir(parents=True)
        conf = self.folder / "slapd.conf"
        schemas = "".join(f"include {SCHEMA / name}.schema\n" for name in ("core", "cosine", "nis", "inetorgperson"))
        conf.write_text(
            f"{schemas}pidfile {self.folder / 'slapd.pid'}\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f'database mdb\nmaxsize 16777216\nsuffix "{SUFFIX}"\nrootdn "{ROOT_DN}"\nrootpw {ROOT_PW}\n'
            f"directory {db}\n"
            # users read their own entry; anyone may bind; the portal searches anonymously
            "access to attrs=userPassword by self write by anonymous auth by * none\n"
            "access to * by * read\n"
        )
        self.log = open(self.folder / "slapd.log", "w")  # noqa: SIM115 - closed in stop()
        # -d: stays in the foreground (a child the test owns); 256: the connection log
        self.process = subprocess.Popen(
            [SLAPD, "-f", str(conf), "-h", f"{self.uri}/", "-d", "256"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"slapd did not start: {(self.folder / 'slapd.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        self._populate()
        return self

    def _populate(self) -> None:
        import ldap
        import ldap.modlist

        conn = ldap.initialize(self.uri)
        conn.simple_bind_s(ROOT_DN, ROOT_PW)

        def add(dn: str, attrs: dict[str, list[str]]) -> None:
            conn.add_s(dn, ldap.modlist.addModlist({k: [v.encode() for v in vs] for k, vs in attrs.items()}))

        add(SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": ["mse"], "o": ["MSE test"]})
        for ou in ("people", "groups"):
            add(f"ou={ou},{SUFFIX}", {"objectClass": ["organizationalUnit"], "ou": [ou]})
        for uid, (password, given, sn) in USERS.items():
            attrs = {"objectClass": ["inetOrgPerson"], "uid": [uid], "cn": [f"{given} {sn}"], "sn": [sn]}
            add(user_dn(uid), {**attrs, "givenName": [given], "mail": [f"{uid}@mse.test"], "userPassword": [password]})
        for cn, members in GROUPS.items():
            # groupOfNames needs a member: an empty group holds the root DN
            add(
                group_dn(cn),
                {"objectClass": ["groupOfNames"], "cn": [cn], "member": [user_dn(m) for m in members] or [ROOT_DN]},
            )
        conn.unbind_s()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()

    def env(self) -> dict[str, str]:
        """The portal's environment for this directory (mseportal.ssoconf)."""
        return {
            "MSEPORTAL_LDAP_URI": self.uri,
            "MSEPORTAL_LDAP_USER_SEARCH": f"ou=people,{SUFFIX}",
            "MSEPORTAL_LDAP_GROUP_SEARCH": f"ou=groups,{SUFFIX}",
            "MSEPORTAL_LDAP_ROLE_GROUPS": (
                f"Admin={group_dn('mse-admins')}; Operator={group_dn('mse-operators')}; Monitor={group_dn('mse-monitors')}"
            ),
        }


def require_or_skip(pytest) -> None:
    reason = skip_reason()
    if reason:
        if os.environ.get("MSEPORTAL_REQUIRE_LDAP") == "1":
            pytest.fail(f"LDAP tests required (MSEPORTAL_REQUIRE_LDAP=1) but cannot run: {reason}")
        pytest.skip(reason)
