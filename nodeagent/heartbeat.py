"""Heartbeats between the nodes of a pair: signed UDP datagrams (:mod:`nodeagent.datagram`).

The secondary sends one heartbeat per interval on each path of each pair it backs (one job
of the process's scheduler per pair, not a task); the primary answers each fresh one at once
with an ack carrying its own side. Both fold what they hear into the pair's state machine
with :meth:`Heartbeats.absorb`.

**Keys.** Each node draws a heartbeat key and a boot id when it starts and gives them to its
peer over the pinned TLS peer API: every peer message carries them (:meth:`peer_msg`), and a
``hello`` peer command is sent when a pair starts, when the peer's datagrams come from a boot
it has no key for, and while heartbeats are quiet. A hello that gets an answer counts as a
heartbeat too (TLS, signed, fresh), and a "not paired" answer says the peer is alive.

**Missed beats, with hysteresis.** A pair's silence is counted on the receiver's monotonic
clock while the receiver runs (:meth:`Node.awake_now`): a receiver that was itself stalled
(CPU starved, frozen) counts the stall as one interval at most, so it never declares its peer
gone for a silence it did not listen through. An answer that comes late is still an answer:
a slow but alive peer is alive. The failover wait is that many seconds of missed beats.

:meth:`Heartbeats.peer_msg` is the envelope of every HTTPS peer message (commands,
snapshots): this node's view of the pair, its instance digest, slot, response time and
heartbeat key.

**Response time.** A heartbeat's response time runs from its send to its ack's arrival as the
kernel stamped it (``SO_TIMESTAMPNS``, as ``ping`` measures), not to when this node's loop got
round to reading it: the time the secondary itself was busy is not its primary's answer.
Where the kernel gives no stamp, the read time serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import platform
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

import aiohttp

from . import datagram
from .datagram import DatagramError
from .hastate import PeerView
from .protocol import PATH_PEER_COMMAND, REMOVED_MARK, Cause, EventCode, HeartbeatPath, PeerCommand, Role, explain

PATH_NAMES = {HeartbeatPath.HM: "Health Monitor network", HeartbeatPath.DIRECT: "direct-connect link"}
REFUSAL_LOG_SECONDS = 10.0  # a refused datagram is logged at most this often per node
READ_BURST = 16  # datagrams read per wake-up of a heartbeat socket
SENT_KEPT = 16  # heartbeats whose ack is awaited (their send times, for the response time)
# SO_TIMESTAMPNS: the kernel's receive time of each datagram, a struct timespec of the
# realtime clock. Python names no such option: its number and the timespec's layout are
# those of Linux on 64-bit x86 and ARM; elsewhere the read time is the arrival.
STAMP_OPTION = 35 if sys.platform == "linux" and platform.machine() in ("x86_64", "amd64", "aarch64") else None
STAMP_SPACE = socket.CMSG_SPACE(16)

log = logging.getLogger("nodeagent.heartbeat")

if TYPE_CHECKING:  # types only: node.py imports this module
    from .node import Node
    from .pair import PairRuntime

# what the head of the last datagram accepted from the peer on a path said (PairRuntime.hb_heard):
# head_key(head), local address, kind, boot, view, digest, slot
Heard = tuple[bytes, str, str, str, PeerView, Any, Any]
# a datagram read: (pair, body, view); False: refused or unkeyed; None: not known (read it whole)
Got = tuple["PairRuntime", dict[str, Any], PeerView] | Literal[False] | None


class HeartbeatSocket:
    """The heartbeat socket (UDP) of one node on one path (its HM IP, or its direct-connect
    address), read by a reader callback of the loop: no asyncio transport, buffer and protocol
    per socket (an agent farm has thousands), and each datagram read into a buffer one byte over
    the largest heartbeat (so a larger one is seen, and refused, without reading it whole)."""

    def __init__(self, beats: Heartbeats, path: HeartbeatPath, local: str, sock: socket.socket) -> None:
        self.beats, self.path, self.local, self.sock = beats, path, local, sock
        self.stamped = False
        if STAMP_OPTION is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, STAMP_OPTION, 1)
                self.stamped = True
            except OSError:  # a kernel without it: the read time serves
                pass
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def bind(cls, beats: Heartbeats, path: HeartbeatPath, local: str, port: int) -> HeartbeatSocket:
        family = socket.AF_INET6 if ipaddress.ip_address(local).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((local, port))
        except OSError:
            sock.close()
            raise
        return cls(beats, path, local, sock)

    def _readable(self) -> None:
        node = self.beats.node
        for _ in range(READ_BURST):  # then the loop's other work; the rest at its next turn
            try:
                if self.stamped:
                    data, ancillary, _flags, addr = self.sock.recvmsg(datagram.MAX_DATAGRAM + 1, STAMP_SPACE)
                    arrived = arrival(ancillary)
                else:
                    data, addr = self.sock.recvfrom(datagram.MAX_DATAGRAM + 1)
                    arrived = None
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error for an earlier send: the peer is not listening (yet)
                node.counters["heartbeat_send_errors"] += 1
                continue
            try:
                self.beats.received(data, self.path, self.local, arrived)
            except Exception:  # never let a datagram stop the socket
                log.exception("%s: heartbeat datagram from %s not handled", node.cfg.name, addr)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send now or not at all: a heartbeat that cannot leave at once is a missed one
        (BlockingIOError and the other OSErrors raise to the caller)."""
        self.sock.sendto(data, addr)

    def is_closing(self) -> bool:
        return self.sock.fileno() < 0

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


def arrival(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time (time.time's clock) in a datagram's ancillary data, or None."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == STAMP_OPTION and len(payload) >= 16:
            seconds, nanoseconds = struct.unpack_from("qq", payload)
            return seconds + nanoseconds * 1e-9
    return None


def head_key(head: bytes) -> bytes:
    """What a pair keeps of a datagram head it has read: a 16-byte digest, not the ~400 bytes
    (a farm keeps one per pair and path). Only the peer's own signed datagrams are looked up
    by it, and a collision of 128 bits is not something anyone can make."""
    return hashlib.blake2b(head, digest_size=16).digest()


def response_time(
    sent: tuple[float, float] | tuple[float, float, HeartbeatPath], now_mono: float, arrived: float | None
) -> float:
    """A heartbeat's response time: sent ``(monotonic, wall[, path])``; its ack read at ``now_mono``,
    arrived (the kernel's stamp, wall clock) at ``arrived``. The stamp is used when it is
    plausible, between the send and the read (a wall clock stepped meanwhile makes it not)."""
    read = now_mono - sent[0]
    if arrived is not None:
        stamped = arrived - sent[1]
        # within a millisecond either side: the kernel's stamp and time.time() are read from
        # the same clock, but not at once, and a float of seconds since 1970 holds ~0.2 us
        if -0.001 <= stamped <= read + 0.001:
            return max(0.0, stamped)
    return read


class Heartbeats:
    __slots__ = ("node", "boot", "key", "seq", "transports", "refused_logged_at")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.boot, self.key = datagram.new_key()
        self.seq = 0
        self.transports: dict[HeartbeatPath, HeartbeatSocket] = {}
        self.refused_logged_at = 0.0

    # ------------------------------------------------------------ sockets
    async def listen(self, port: int) -> None:
        """The node's heartbeat sockets (UDP, the HM port number) on each of its addresses."""
        cfg = self.node.cfg
        for path, address in ((HeartbeatPath.HM, cfg.hm_ip), (HeartbeatPath.DIRECT, cfg.direct_connect)):
            if address:
                self.transports[path] = HeartbeatSocket.bind(self, path, address, port)

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()
        self.transports.clear()

    # ------------------------------------------------------------ a pair's beats
    def start(self, pr: PairRuntime) -> None:
        """A pair starts: the secondary beats each interval; both say hello (keys) at once."""
        node = self.node
        if node.cfg.role is Role.SECONDARY and pr.beat_job is None and node.scheduler is not None:
            # sent once the scheduler's wake-up has run its other jobs (call_soon), so that the
            # loop goes idle right after: a primary on this CPU answers at once, instead of
            # waiting behind this process's work (loopback wakes the receiver on the sender's CPU)
            call_soon = asyncio.get_running_loop().call_soon

            def beat() -> None:
                call_soon(self._beat, pr)

            pr.beat_job = node.scheduler.every(
                lambda: pr.ha.config.heartbeat_interval, beat, name=f"{node.cfg.name}-beat"
            )
        # the secondary says hello at once; a primary when a beat comes it has no key for
        pr.hello_due = 0.0 if node.cfg.role is Role.SECONDARY else float("inf")

    def stop(self, pr: PairRuntime) -> None:
        if pr.beat_job is not None:
            pr.beat_job.cancel()
            pr.beat_job = None

    def _fixed(self, pr: PairRuntime, kind: str, path: HeartbeatPath) -> dict[str, Any]:
        cfg = self.node.cfg
        return {
            "kind": kind,
            "from": cfg.hm_ip,
            "to": pr.peer["direct_connect"] if path is HeartbeatPath.DIRECT else pr.peer_hm_ip,
            "path": path.value,
            "boot": self.boot,
            "name": cfg.name,
            "view": pr.ha.view().to_dict(),
            "digest": pr.instance.digest(),
            "slot": pr.slot,
        }

    def datagram_for(self, pr: PairRuntime, kind: str, path: HeartbeatPath, echo: int | None = None) -> bytes:
        """The next datagram to the peer on ``path``: its fixed members are encoded once per
        change of this side (view, digest, slot), kept per pair, kind and path; only the
        sequence number, the echo and the response time are encoded for each datagram."""
        self.seq += 1
        stamp = self._stamp(pr)
        heads = pr.hb_heads
        if heads is None:
            heads = pr.hb_heads = {}
        kept = heads.get((kind, path))
        if kept is None or kept[0] != stamp:
            kept = heads[(kind, path)] = (stamp, datagram.head_of(self._fixed(pr, kind, path)))
        return datagram.encode_with(self.key, kept[1], self.seq, echo, pr.mean_ms)

    @staticmethod
    def _stamp(pr: PairRuntime) -> tuple:
        """What this side's datagrams to the pair are made of, but for the sequence number,
        the echo and the response time."""
        view, digest = pr.ha.view(), pr.instance.digest()
        return (view, tuple(digest.values()), pr.slot, pr.peer_hm_ip, pr.peer.get("direct_connect"))

    def _side_changed(self, pr: PairRuntime, path: HeartbeatPath) -> bool:
        """This side changed since the last ack on ``path`` was made."""
        kept = pr.hb_heads.get(("ack", path)) if pr.hb_heads is not None else None
        return kept is None or kept[0] != self._stamp(pr)

    def _send(self, pr: PairRuntime, path: HeartbeatPath, data: bytes) -> tuple[float, float] | None:
        """Send one datagram; the (monotonic, wall) time it left (None: not sent)."""
        transport = self.transports.get(path)
        if transport is None or transport.is_closing():
            return None
        to = pr.peer["direct_connect"] if path is HeartbeatPath.DIRECT else pr.peer_hm_ip
        port = pr.peer.get("port", self.node.cfg.port)
        sent_at = (time.monotonic(), time.time())
        try:
            transport.sendto(data, (to, port))
        except OSError:  # no route (a cable pulled): the beat is missed, not an error
            self.node.counters["heartbeat_send_errors"] += 1
            return None
        return sent_at

    def _beat(self, pr: PairRuntime) -> None:
        if pr.beat_job is not None:  # not stopped (unpaired, a role change) since it was queued
            self.send(pr)

    def send(self, pr: PairRuntime) -> None:
        """The secondary's heartbeat, on every path of the pair (a scheduler job)."""
        node = self.node
        if node.stopping or not pr.hb_peer.key:  # not before the hello: the primary could not check it
            return
        counters = node.counters
        for path in pr.paths:
            sent_at = self._send(pr, path, self.datagram_for(pr, "hb", path))
            if sent_at is not None:
                pr.hb_sent[self.seq] = (*sent_at, path)
                counters["heartbeats_sent"] += 1
                if path is HeartbeatPath.DIRECT:
                    counters["heartbeats_sent_direct"] += 1
        while len(pr.hb_sent) > SENT_KEPT:  # the oldest never answered: missed
            _mono, _wall, path = pr.hb_sent.pop(next(iter(pr.hb_sent)))
            counters["heartbeats_missed"] += 1
            if path is HeartbeatPath.DIRECT:
                counters["heartbeats_missed_direct"] += 1

    def received(self, data: bytes, path: HeartbeatPath, local: str, arrived: float | None = None) -> None:
        """A datagram read on ``path``'s socket; ``arrived``: the kernel's receive time (wall clock).

        A heartbeat is answered first and absorbed after: the ack carries this side as it
        stands, and a second one follows at once if absorbing the heartbeat changed this side.
        The primary's answer so waits for no bookkeeping, and the secondary never misses a
        change. A datagram whose head (its fixed members) is that of the last one accepted
        from the peer on this path is not parsed again (:meth:`_known`)."""
        node = self.node
        now_mono = time.monotonic()
        got = self._known(data, path, local, now_mono)
        if got is None:
            got = self._read(data, path, local, now_mono)
        if not got:  # refused, or awaiting the peer's key
            return
        pr, msg, view = got
        if msg["kind"] == "hb":
            self._ack(pr, path, msg["seq"])
        else:
            echo = msg.get("echo")
            sent_at = pr.hb_sent.pop(echo, None) if isinstance(echo, int) else None
            if sent_at is not None:
                pr.add_rtt(response_time(sent_at, now_mono, arrived))
        pr.path_heard[path] = time.time()
        node.counters["heartbeats_received"] += 1
        if path is HeartbeatPath.DIRECT:
            node.counters["heartbeats_received_direct"] += 1
        self.absorb(pr, msg, view)
        if msg["kind"] == "hb" and self._side_changed(pr, path):
            self._ack(pr, path, None)  # this side after absorbing theirs (no echo: not a response)
        node.schedule(pr)
        node.changed()

    def _ack(self, pr: PairRuntime, path: HeartbeatPath, echo: int | None) -> None:
        if self._send(pr, path, self.datagram_for(pr, "ack", path, echo=echo)) is not None:
            self.node.counters["heartbeats_sent"] += 1
            if path is HeartbeatPath.DIRECT:
                self.node.counters["heartbeats_sent_direct"] += 1

    def _wanted(self) -> str:
        return "ack" if self.node.cfg.role is Role.SECONDARY else "hb"

    def _read(self, data: bytes, path: HeartbeatPath, local: str, now_mono: float) -> Got:
        """A datagram parsed, checked and accepted: (pair, body, the peer's view); False if it
        was refused (counted) or awaits the peer's key."""
        node = self.node
        try:
            tag, raw, body = datagram.parse(data)
            if body["to"] != local or body["path"] != path.value:
                raise DatagramError(f"addressed to {body['to']} on the {body['path']} path, received on {local}")
            pr = node.pairs.get(body["from"])
            if pr is None:
                raise DatagramError(f"not paired with {body['from']}")
            if body["kind"] != self._wanted():
                raise DatagramError(f"a {node.cfg.role.value} does not take {body['kind']!r} datagrams")
            try:
                pr.hb_peer.accept(tag, raw, body)
            except DatagramError as e:
                return self._not_accepted(pr, body["boot"], e, now_mono)
            view = PeerView.from_dict(body["view"])
        except (DatagramError, KeyError, ValueError, TypeError) as e:
            self._refused(str(e))
            return False
        split = datagram.split(data)
        if split is not None and split[1:] == (body["seq"], body.get("echo"), body.get("mean_ms")):
            if pr.hb_heard is None:
                pr.hb_heard = {}
            pr.hb_heard[path] = (
                head_key(split[0]),
                local,
                body["kind"],
                body["boot"],
                view,
                body.get("digest"),
                body.get("slot"),
            )
        return pr, body, view

    def _known(self, data: bytes, path: HeartbeatPath, local: str, now_mono: float) -> Got:
        """The fast path of :meth:`received`: a datagram whose head is the head of the last one
        accepted from that peer on that path says what that one said, but for its sequence
        number, echo and response time (:func:`datagram.split`). It is verified (signature,
        sequence) as any other, and not parsed. None: not such a datagram (the full read)."""
        split = datagram.split(data)
        if split is None:
            return None
        head, seq, echo, mean_ms = split
        key = head_key(head)
        for pr in self.node.pairs.values():  # one or two
            heard = pr.hb_heard.get(path) if pr.hb_heard is not None else None
            if heard is not None and heard[0] == key:
                break
        else:
            return None
        _, h_local, kind, boot, view, digest, slot = heard
        if h_local != local or kind != self._wanted():
            return None  # this node changed since: read it whole
        try:
            pr.hb_peer.admit(data[len(datagram.MAGIC) : datagram.HEADER], data[datagram.HEADER :], boot, seq)
        except DatagramError as e:
            return self._not_accepted(pr, boot, e, now_mono)
        return pr, {"kind": kind, "digest": digest, "slot": slot, "seq": seq, "echo": echo, "mean_ms": mean_ms}, view

    def _not_accepted(self, pr: PairRuntime, boot: str, e: DatagramError, now_mono: float) -> Literal[False]:
        if not pr.hb_peer.key or boot != pr.hb_peer.boot:
            # the peer restarted (or its hello is still on its way): get its key now
            pr.hello_due = min(pr.hello_due, now_mono)
            self.node.counters["datagrams_unkeyed"] += 1
            log.debug("%s: %s", self.node.cfg.name, e)
        else:
            self._refused(str(e))
        return False

    def _refused(self, why: str) -> None:
        node = self.node
        node.counters["datagrams_refused"] += 1
        now = time.monotonic()
        if now - self.refused_logged_at >= REFUSAL_LOG_SECONDS:
            self.refused_logged_at = now
            log.warning("%s: heartbeat datagram refused: %s", node.cfg.name, why)

    # ------------------------------------------------------------ peer messages (HTTPS)
    def announcement(self) -> dict[str, str]:
        return {"boot": self.boot, "key": self.key.hex()}

    def peer_msg(self, pr: PairRuntime, **extra: Any) -> dict[str, Any]:
        """A ``protocol.PeerMessage`` (over TLS only: it carries this node's heartbeat key); a
        command carries the cause driving the pair, so the peer's events name it too."""
        cfg = self.node.cfg
        msg: dict[str, Any] = {
            "from": cfg.hm_ip,
            "name": cfg.name,
            "view": pr.ha.view().to_dict(),
            "digest": pr.instance.digest(),
            "slot": pr.slot,
            "mean_ms": pr.mean_ms,
            "hb": self.announcement(),
            **extra,
        }
        if "cmd" in extra and "cause" not in extra:
            msg["cause"] = pr.cause
        return msg

    def absorb(self, pr: PairRuntime, msg: dict, view: PeerView | None = None) -> None:
        """A fresh, authenticated message of the peer (a datagram, a peer request or answer)."""
        view = view or PeerView.from_dict(msg["view"])
        if "hb" in msg:
            pr.hb_peer.learn(msg["hb"])
        pr.peer_view = view
        pr.peer_digest = msg.get("digest") or {}
        pr.note_lag()
        if msg.get("mean_ms") is not None and pr.ha.role is Role.PRIMARY:
            pr.peer_mean_ms = msg["mean_ms"]
        if pr.ha.role is Role.PRIMARY and msg.get("slot"):
            pr.slot = int(msg["slot"])
        pr.beat_awake = self.node.awake_now()
        self.node.record(pr.ha.on_heartbeat(time.time(), view), pr)

    # ------------------------------------------------------------ hello: keys over TLS
    def maybe_hello(self, pr: PairRuntime, now_mono: float) -> None:
        """Say hello (give our key, get theirs): a secondary until it has its primary's key;
        either node when a beat came from a boot it has no key for (the peer restarted) or
        while heartbeats are quiet. At most once per interval, one at a time."""
        if self.node.stopping or (pr.hello_task is not None and not pr.hello_task.done()):
            return
        quiet = pr.ha.quiet is not None and pr.ha.quiet >= pr.ha.config.heartbeat_down_after
        unkeyed = not pr.hb_peer.key and self.node.cfg.role is Role.SECONDARY
        due = unkeyed or quiet or pr.hello_due <= now_mono
        if not due or now_mono - pr.hello_at < pr.ha.config.heartbeat_interval:
            return
        pr.hello_at, pr.hello_due = now_mono, float("inf")
        pr.hello_task = asyncio.create_task(self.hello(pr), name=f"{self.node.cfg.name}-hello-{pr.peer_hm_ip}")

    async def hello(self, pr: PairRuntime) -> None:
        node = self.node
        timeout = max(0.5, min(2.0, pr.ha.config.heartbeat_interval * 2))
        msg = self.peer_msg(pr, cmd=PeerCommand.HELLO.value)
        try:
            status, out = await pr.client(timeout=timeout).request("POST", PATH_PEER_COMMAND, msg, auto_key=False)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return
        if status == 200 and isinstance(out, dict) and "view" in out:
            keyed = bool(pr.hb_peer.key)
            try:
                self.absorb(pr, out)
            except (KeyError, ValueError, TypeError):
                return
            if not keyed and pr.hb_peer.key and node.cfg.role is Role.SECONDARY:
                self.send(pr)  # the first beat at once: the pair's response time is known from now
            node.schedule(pr)
            node.changed()
        elif status == 410 and isinstance(out, dict) and str(out.get("error", "")).startswith(REMOVED_MARK):
            # the peer removed our pairing (the manager could not reach us to remove ours):
            # it is alive, so never taken over; and we drop the pairing
            pr.ha.peer_alive(time.time())
            await node.stand_down_removed(pr, str(out["error"]))
        else:
            # an answer, but not a peer message (e.g. 404 "not paired" while the pair is being
            # deleted): the peer is alive, so it must not be taken over
            pr.ha.peer_alive(time.time())

    # ------------------------------------------------------------ paths
    def watch_paths(self, pr: PairRuntime, now: float) -> None:
        """A pair with two paths: one going quiet while the other still carries heartbeats is
        an event (and the portal's alert), never a failover; its return is one too. (Both
        quiet is "Heartbeats lost", which the state machine records.)"""
        if len(pr.paths) < 2 or not (pr.ha.running and pr.ha.heartbeat_up):
            return
        for path in pr.paths:
            up, shown = pr.path_up(path, now), pr.path_shown_up.get(path)
            if shown is None:
                if up:
                    pr.path_shown_up[path] = True
            elif shown and not up:
                pr.path_shown_up[path] = False
                others = ", ".join(PATH_NAMES[p] for p in pr.paths if p is not path and pr.path_up(p, now))
                down_after = pr.ha.config.heartbeat_down_after
                self.node.emit(
                    EventCode.HEARTBEAT_PATH_DOWN,
                    f"No heartbeats on the {PATH_NAMES[path]} for {down_after:g} s; the {others} still carries "
                    "them: no failover.",
                    pr,
                    why=explain(
                        "heartbeat.one_path_down",
                        f"No failover: the {PATH_NAMES[path]} is silent for {down_after:g} s, the {others} still "
                        "carries heartbeats.",
                        path=path.value, down_after_s=down_after, paths_up=len(pr.paths) - 1,
                    ),
                )  # fmt: skip
            elif not shown and up:
                pr.path_shown_up[path] = True
                self.node.emit(EventCode.HEARTBEAT_PATH_UP, f"Heartbeats on the {PATH_NAMES[path]} again.", pr)

    async def tell_stopping(self, pr: PairRuntime, cause: Cause | None = None) -> None:
        """Stopping by hand or on SIGTERM: an immediate message, so the peer knows at once."""
        msg = self.peer_msg(pr, cmd=PeerCommand.HEARTBEAT_NOW.value, cause=cause)
        try:
            await pr.client(timeout=0.5).request("POST", PATH_PEER_COMMAND, msg, auto_key=False)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
