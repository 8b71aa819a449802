"""The node's state directory: atomic JSON files, the event log and instance data logs.

Layout (``var/nodeagent/NAME`` by default)::

    config.json        the node configuration (set-up / fleet)      atomic
    ha.json            HA pairs, services flag, last shutdown state   atomic
    licenses.json      installed licenses (licences.json before)     atomic
    idempotency.json   answers to mutating requests, by key          atomic
    traps.json         trap destinations and push positions          atomic
    events.jsonl       the event log, one JSON object a line         append
    instances/*.jsonl  instance data (element store), one record a line   append

Atomic = write a temporary file in the same directory, flush, fsync, ``os.replace``,
fsync the directory (the fsyncs: unless :func:`set_durable` turned them off, as the farm does). Append logs are written (not fsynced) before a write is acknowledged,
which survives a killed process; a torn last line (power loss) is ignored on load.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

LICENSES_FILE = "licenses.json"
ASSIGNMENTS_FILE = "service-assignments.json"
LICENSES_FILE_V1 = "licences.json"  # the old spelling, still read at start-up


# fsync before every rename (and the directory after): a state file survives a power loss,
# not only a killed process. The agent farm (a simulator of thousands of appliances in one
# process, for tests and benchmarks) turns it off: its files are still replaced atomically,
# but thousands of journal commits at start-up would be its start-up time.
_durable = True


def set_durable(durable: bool) -> None:
    global _durable
    _durable = durable


def durable() -> bool:
    return _durable


def fsync_dir(path: Path) -> None:
    if not _durable:
        return
    try:
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_new(tmp: Path) -> int:
    """A fresh file, mode 0600, never through a symlink: a leftover of a killed writer is
    removed first; the directory is made when it is missing (not checked on every write)."""
    for _ in range(3):
        try:
            return os.open(tmp, _NEW_FILE, 0o600)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        except FileNotFoundError:
            tmp.parent.mkdir(parents=True, exist_ok=True)
    return os.open(tmp, _NEW_FILE, 0o600)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON, atomically. The temporary file is named by the
    writing process and thread (one writer of a state directory: its agent holds it), so no
    name is searched for; it is made 0600 and so never readable by others, even for a moment."""
    path = Path(path)
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()  # one write, not many
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    fd = _open_new(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if _durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def read_jsonl(path: str | Path) -> Iterator[dict]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                continue  # torn last line


class AppendLog:
    """An append-only JSON-lines file kept open. Its path is kept as a string: a farm has
    thousands of these, and a Path object (its parts list, strings) is ~0.3 KB each."""

    __slots__ = ("path", "_f", "_fsync")

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._f: BinaryIO | None = None
        self._fsync = fsync

    def append(self, obj: Mapping[str, Any]) -> None:
        """One line, whole or not at all: a short write (a full disk, the file at its size
        limit) is taken back and raised as OSError, so the next line never joins a torn one
        (read_jsonl would then drop both)."""
        if self._f is None:
            self._f = open(self.path, "ab", buffering=0)
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        written = self._f.write(data)  # unbuffered: one write(2), which may write part of it
        if written != len(data):
            fd = self._f.fileno()
            os.ftruncate(fd, os.fstat(fd).st_size - (written or 0))
            raise OSError(
                errno.ENOSPC, f"a short write: only {written} of {len(data)} bytes stored (taken back)", self.path
            )
        if self._fsync:
            os.fsync(self._f.fileno())

    def rewrite(self, objs: list[dict]) -> None:
        """Replace the whole log atomically (compaction, failback copy)."""
        self.close()
        tmp = os.path.splitext(self.path)[0] + ".tmp"
        with open(tmp, "wb") as f:
            for o in objs:
                f.write(json.dumps(o, separators=(",", ":")).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class StateDir:
    """A node's state directory. Its root is kept as a string, and paths in it are made when
    asked for (a farm has thousands of nodes: see AppendLog)."""

    __slots__ = ("_root",)

    def __init__(self, root: str | Path) -> None:
        self._root = os.fspath(root)

    @property
    def root(self) -> Path:
        return Path(self._root)

    def ensure(self) -> StateDir:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.root, 0o700)
        except OSError:  # pragma: no cover
            pass
        (self.root / "instances").mkdir(exist_ok=True)
        return self

    def path(self, name: str) -> Path:
        return Path(self._root, name)

    def load(self, name: str, default: Any = None) -> Any:
        return read_json(self.path(name), default)

    def save(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path(name), obj)

    def save_if_changed(self, name: str, obj: Any) -> None:
        if read_json(self.path(name)) != json.loads(json.dumps(obj)):
            atomic_write_json(self.path(name), obj)

    def instance_log(self, db_name: str) -> Path:
        return Path(self._root, "instances", f"{db_name}.jsonl")

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self._root, "config.json"))


def pid_running(pid: int) -> bool:
    """Is a process (an agent, by its pid file) running? A zombie is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
