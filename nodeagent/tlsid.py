"""The agent's TLS identity: its key and certificate, their fingerprint, and the SSL contexts.

Each agent makes its own key (EC P-256) and a self-signed certificate the first time it
starts (or at ``mse-setup``), in ``STATE_DIR/tls/``; an operator may give one instead
(``tls_cert`` / ``tls_key`` in the node's config). Nobody checks it against a CA: the
portal pins its fingerprint when the appliance is added (trust on first use, as SSH does)
and gives each peer the other's fingerprint when it configures the pair, so every later
connection is to exactly that certificate.

A fingerprint is the SHA-256 of the certificate's DER, as 32 colon-separated hex pairs
(``AB:CD:…``), which is what browsers and ``openssl x509 -fingerprint -sha256`` show.
"""

from __future__ import annotations

import asyncio.sslproto
import datetime as dt
import hashlib
import ipaddress
import os
import re
import ssl
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import aiohttp

from . import store

# cryptography is imported only to make an identity (_make), never to serve one: a running
# agent does not carry its ~9 MB (an agent farm of 2,000 nodes: 4.7 KB a node). A serve or a
# farm makes its missing identities in a child process (make_missing) before its nodes start.


class IdentityError(ValueError):
    """The node's TLS certificate or key cannot be used (the message says which file and why)."""


FINGERPRINT_RE = re.compile(r"^(?:[0-9A-F]{2}:){31}[0-9A-F]{2}$")
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"
VALID_DAYS = 3650


def fingerprint_of(der: bytes) -> str:
    """``AB:CD:…``: SHA-256 of a certificate in DER form."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def fingerprint_bytes(fingerprint: str) -> bytes:
    """The 32 bytes of a fingerprint (``AB:CD:…``, any case, colons optional); ValueError if not one."""
    text = fingerprint.strip().upper().replace(":", "")
    if not re.fullmatch(r"[0-9A-F]{64}", text):
        raise ValueError(f"not a SHA-256 fingerprint: {fingerprint!r}")
    return bytes.fromhex(text)


def normalise(fingerprint: str) -> str:
    """A fingerprint in its one spelling (``AB:CD:…``); ValueError if it is not one."""
    return ":".join(f"{b:02X}" for b in fingerprint_bytes(fingerprint))


@dataclass(frozen=True)
class Identity:
    cert_path: Path
    key_path: Path
    fingerprint: str
    made: bool  # created just now (else read from disk)

    def server_context(self) -> ssl.SSLContext:
        return server_context(str(self.cert_path), str(self.key_path))


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """The server's context for a certificate and key (cached: see _load_context); files
    replaced since are loaded afresh."""
    c, k = os.stat(cert_path), os.stat(key_path)
    return _load_context(cert_path, key_path, (c.st_ino, c.st_mtime_ns, c.st_size, k.st_ino, k.st_mtime_ns))


@lru_cache(maxsize=64)
def _load_context(cert_path: str, key_path: str, _version: tuple) -> ssl.SSLContext:
    """The server's context for a certificate and key. Kept for the 64 last used: one agent
    keeps its own for ever; an agent farm of thousands of nodes does not keep thousands
    (each holds its certificate and key, ~20 KB), and loads one again (~2 ms) when a
    connection comes to a node whose context was dropped."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


TLS_READ_BUFFER = 32 * 1024


def lean_tls_buffers() -> None:
    """asyncio (3.11) gives every TLS connection a 256 KiB read buffer, zero-filled, so each
    costs 256 KiB of RSS on each side while it stays open: an agent farm of 2,000 nodes, or a
    poller keeping its connections to 10,000 agents, would spend gigabytes on buffers. A TLS
    record is at most 16 KiB; reads of 32 KiB lose nothing. (A class attribute asyncio reads
    as its tuning constant; set once per process, by the agent, the witness and the portal.)"""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


@lru_cache(maxsize=65536)
def pin(fingerprint: str) -> aiohttp.Fingerprint:
    """aiohttp's check of a pinned certificate, one object per fingerprint: aiohttp keys its
    connection pool by this object (by identity), so a new one per request would open a new
    TLS connection for every heartbeat instead of reusing the open one."""
    return aiohttp.Fingerprint(fingerprint_bytes(fingerprint))


def client_context() -> ssl.SSLContext:
    """For connections whose certificate is checked by its pinned fingerprint, not by a CA
    (aiohttp's ``Fingerprint`` does the check once the handshake is done)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _make(cert_path: Path, key_path: Path, name: str, addresses: list[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "mse-agent")])
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses) if a]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(key_path.with_suffix(".tmp"), pem_key, 0o600)
    _write_new(cert_path.with_suffix(".tmp"), cert.public_bytes(serialization.Encoding.PEM), 0o644)
    os.replace(key_path.with_suffix(".tmp"), key_path)  # the key first: a certificate on disk always has its key
    os.replace(cert_path.with_suffix(".tmp"), cert_path)
    store.fsync_dir(key_path.parent)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """A fresh file (never a leftover's mode, never through a symlink), synced to disk."""
    with suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)
        f.flush()
        if store.durable():
            os.fsync(f.fileno())


PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*?-----END CERTIFICATE-----")


def read_fingerprint(cert_path: Path) -> str:
    """The fingerprint of a PEM certificate file (its first certificate: a chain's leaf);
    IdentityError naming the file if it is not one. The stdlib's, not cryptography's."""
    try:
        m = PEM_CERT_RE.search(Path(cert_path).read_text(encoding="ascii"))
        if m is None:
            raise ValueError("no BEGIN CERTIFICATE ... END CERTIFICATE block")
        der = ssl.PEM_cert_to_DER_cert(m.group(0))
        _check_der_certificate(der)
    except (OSError, ValueError) as e:  # UnicodeDecodeError and binascii.Error are too
        raise IdentityError(f"{cert_path}: not a PEM certificate ({e})") from None
    return fingerprint_of(der)


def _check_der_certificate(der: bytes) -> None:
    """ValueError unless ``der`` has an X.509 certificate's outer shape: one DER SEQUENCE,
    exactly as long as its header says, whose first member is a SEQUENCE (the signed part).
    Cheap (a farm reads thousands at its start); the certificate itself is checked where it
    is used: an operator's when its key is loaded with it (ensure), every one by each TLS peer."""
    if len(der) < 4 or der[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    if der[1] < 0x80:
        length, start = der[1], 2
    else:
        size = der[1] & 0x7F
        if not 1 <= size <= 4 or len(der) < 2 + size:
            raise ValueError("a DER length that is no length")
        length, start = int.from_bytes(der[2 : 2 + size], "big"), 2 + size
    if start + length != len(der) or der[start] != 0x30:
        raise ValueError(f"{len(der)} bytes of DER that do not hold one certificate")


# the identities make_missing had made in a child process: new pairs, like one made here
_MADE_ELSEWHERE: set[str] = set()


def _needs_identity(state_dir: Path, cert_file: str | None, key_file: str | None) -> bool:
    tls = Path(state_dir) / "tls"
    return not (cert_file or key_file) and not (tls / CERT_FILE).exists() and not (tls / KEY_FILE).exists()


def make_missing(wanted: list[tuple[Path, str, list[str], str | None, str | None]]) -> int:
    """Make the identities missing among ``wanted`` (state directory, name, addresses, and
    the operator's certificate and key files, if any) in child processes, so that this
    one never imports cryptography. Returns how many it made; IdentityError if it failed."""
    todo = [
        (sd, name, addresses)
        for sd, name, addresses, cert_file, key_file in wanted
        if _needs_identity(sd, cert_file, key_file)
    ]
    if not todo:
        return 0
    import json
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    # the package this process runs, found by the child however it was found here
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p))
    # a farm's thousands: on each core at once (a key and a certificate take ~1 ms)
    chunks = max(1, min(os.cpu_count() or 1, 4, len(todo) // 200))

    def make(part: list) -> subprocess.CompletedProcess:
        identities = [{"state_dir": str(sd), "name": name, "addresses": addresses} for sd, name, addresses in part]
        ask = {"durable": store.durable(), "identities": identities}
        return subprocess.run(
            [sys.executable, "-m", "nodeagent.tlsid"], input=json.dumps(ask), capture_output=True, text=True, env=env
        )

    with ThreadPoolExecutor(chunks) as pool:
        runs = list(pool.map(make, [todo[i::chunks] for i in range(chunks)]))
    for done in runs:
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise IdentityError(f"the identities could not be made: {why[0][:500]}")
    for sd, _name, _addresses in todo:
        _MADE_ELSEWHERE.add(os.path.abspath(Path(sd) / "tls" / CERT_FILE))
    return len(todo)


def ensure(
    state_dir: Path,
    *,
    name: str,
    addresses: list[str],
    cert_file: str | None = None,
    key_file: str | None = None,
) -> Identity:
    """The node's identity: the operator's certificate and key when configured (both), else
    the agent's own under ``state_dir/tls/``, made on first use. Checked to load as a pair."""
    if cert_file or key_file:
        if not (cert_file and key_file):
            raise IdentityError("tls_cert and tls_key go together: give both, or neither (the agent makes its own)")
        cert_path, key_path, made = Path(cert_file), Path(key_file), False
    else:
        tls = Path(state_dir) / "tls"
        cert_path, key_path = tls / CERT_FILE, tls / KEY_FILE
        if cert_path.exists() != key_path.exists():  # never throw a key away by making a new pair
            have, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
            raise IdentityError(
                f"{have} is there but {missing} is not: restore it, or remove {have} to make a new identity"
                " (the portal then refuses the appliance until an Admin trusts the new certificate)"
            )
        made = not cert_path.exists()
        if made:
            _make(cert_path, key_path, name, addresses)
        elif os.path.abspath(cert_path) in _MADE_ELSEWHERE:  # by make_missing's child, for this
            _MADE_ELSEWHERE.discard(os.path.abspath(cert_path))  # start: a pair by construction
            made = True
    fingerprint = read_fingerprint(cert_path)
    identity = Identity(cert_path, key_path, fingerprint, made)
    if made:  # made just now, as a pair: loaded when the first connection comes
        return identity
    try:
        identity.server_context()  # the files found: checked once (and cached)
    except (OSError, ssl.SSLError) as e:
        raise IdentityError(f"{cert_path} / {key_path}: the certificate and key do not load as a pair ({e})") from None
    return identity


def _main() -> int:
    """``python -m nodeagent.tlsid``: make the identities the JSON on stdin asks for
    (``{"durable": bool, "identities": [{"state_dir", "name", "addresses"}]}``): make_missing's child."""
    import json
    import sys

    ask = json.load(sys.stdin)
    store.set_durable(bool(ask["durable"]))
    for item in ask["identities"]:
        try:
            ensure(Path(item["state_dir"]), name=item["name"], addresses=list(item["addresses"]))
        except (OSError, ValueError) as e:  # IdentityError is a ValueError
            print(f"{item['state_dir']}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
