"""Instance data: the Context Aware element store, and its replication bookkeeping.

One :class:`InstanceStore` per database instance: the primary's own (``msedb``) and, on a
secondary, one per primary it backs (``mseos3``, ``mseos4``). Every write gets the next
log sequence number (``lsn``); a record replaces the stored one for its MAC only if its lsn
is higher, so a snapshot and live replication can be applied in any order.

``sync_lsn`` (persisted) is the point up to which a replica is known complete: the primary
sends a catch-up of every record with a higher lsn, then sets it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from .store import AppendLog, atomic_write_json, read_json, read_jsonl

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class BadElement(ValueError):
    pass


def validate_element(body: object) -> dict:
    if not isinstance(body, dict):
        raise BadElement("body must be a JSON object with mac, x, y and floor")
    mac = str(body.get("mac", "")).strip().lower()
    if not MAC_RE.match(mac):
        raise BadElement("mac must look like 00:11:22:33:44:55")
    out: dict[str, Any] = {"mac": mac}
    for k in ("x", "y"):
        v = body.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadElement(f"{k} must be a number")
        out[k] = v
    floor = body.get("floor")
    if isinstance(floor, bool) or not isinstance(floor, (int, str)) or str(floor) == "":
        raise BadElement("floor must be a number or a name")
    out["floor"] = floor
    extra = set(body) - {"mac", "x", "y", "floor"}
    if extra:
        raise BadElement(f"unknown fields {sorted(extra)}")
    return out


class InstanceStore:
    __slots__ = ("db_name", "db_port", "log_path", "meta_path", "_log", "records", "lsn", "sync_lsn")

    def __init__(self, db_name: str, db_port: int, log_path: str | Path) -> None:
        self.db_name = db_name
        self.db_port = db_port
        self.log_path = os.fspath(log_path)  # strings, not Paths (store.AppendLog says why)
        self.meta_path = os.path.splitext(self.log_path)[0] + ".meta.json"
        self.records: dict[str, dict] = {}
        self.lsn = 0
        lines = 0
        for rec in read_jsonl(self.log_path):
            lines += 1
            self._apply_mem(rec)
        meta = read_json(self.meta_path, {}) or {}
        self.sync_lsn = int(meta.get("sync_lsn", 0))
        self.lsn = max(self.lsn, int(meta.get("lsn", 0)))
        self._log = AppendLog(self.log_path)
        if lines > 2 * len(self.records) + 1000:
            self._log.rewrite(self.snapshot())

    def _apply_mem(self, rec: dict) -> bool:
        cur = self.records.get(rec["mac"])
        if cur is not None and cur["lsn"] >= rec["lsn"]:
            return False
        self.records[rec["mac"]] = rec
        if rec["lsn"] > self.lsn:
            self.lsn = rec["lsn"]
        return True

    @property
    def count(self) -> int:
        return len(self.records)

    def put(self, element: dict) -> dict:
        """A local write: the next lsn, logged before it is applied."""
        rec = dict(element)
        rec["lsn"] = self.lsn + 1
        rec["ts"] = round(time.time(), 3)
        self._log.append(rec)
        self._apply_mem(rec)
        return rec

    def apply(self, rec: dict) -> bool:
        """A replicated record: kept only if newer than what we hold for that MAC."""
        cur = self.records.get(rec["mac"])
        if cur is not None and cur["lsn"] >= rec["lsn"]:
            return False
        self._log.append(rec)
        return self._apply_mem(rec)

    def get(self, mac: str) -> dict | None:
        return self.records.get(mac.lower())

    def snapshot(self) -> list[dict]:
        return sorted(self.records.values(), key=lambda r: r["lsn"])

    def since(self, lsn: int) -> list[dict]:
        return sorted((r for r in self.records.values() if r["lsn"] > lsn), key=lambda r: r["lsn"])

    def replace_all(self, records: list[dict]) -> None:
        """Failback: take the secondary's data as it is (atomic rewrite of the log)."""
        keep_lsn = self.lsn
        self.records = {}
        self.lsn = 0
        for r in records:
            self._apply_mem(r)
        self._log.rewrite(self.snapshot())
        self.lsn = max(self.lsn, keep_lsn)
        self.set_sync_lsn(self.lsn)

    def set_sync_lsn(self, lsn: int) -> None:
        self.sync_lsn = lsn
        atomic_write_json(self.meta_path, {"sync_lsn": lsn, "lsn": self.lsn})

    def digest(self) -> dict:
        return {"count": self.count, "lsn": self.lsn}

    def close(self) -> None:
        self._log.close()
