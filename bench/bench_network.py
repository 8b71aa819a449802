"""The real-network table (issue 11), as figures: every scenario of
``nodeagent/tests/test_netns.py`` (agents on hosts in network namespaces, a client writing
~50/s through the VIP, Automatic failover, waits of 3 s and 10 s), one JSON object per
scenario and wait:
client-visible outage beside its floor (the wait: a failover detected by silence cannot be
shorter) as a ratio, the seconds two nodes accepted writes for the VIP at once, and the
acknowledged writes lost.

The scenarios are the tests (one source for both): this runs them with pytest and reads the
figures they print. Needs root, CAP_NET_ADMIN and Debian's arping; without them it says so
and exits 0 having measured nothing. Its own check fails the benchmark: a failed scenario,
a lost write, or two owners at once exit 1.
Usage: python bench/bench_network.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nodeagent.tests.netns import missing_requirements  # noqa: E402

OUTAGE = re.compile(r"client-visible outage (?P<s>[\d.]+) s \(outage/wait (?P<r>[\d.]+)\)")
DUAL = re.compile(r"dual-ownership (?P<s>[\d.]+) s")
LOST = re.compile(r"acknowledged writes lost (?P<lost>\d+) of (?P<acked>\d+)")
WAIT = re.compile(r"wait (?P<w>[\d.]+) s")


def blocks(out: str) -> list[tuple[str, str]]:
    """Each scenario's "[netns] title" line with the indented lines after it."""
    found: list[tuple[str, str]] = []
    for line in out.splitlines():
        if line.startswith("[netns] "):
            found.append((re.split(r"[;:]", line[len("[netns] ") :], maxsplit=1)[0].strip(), line))
        elif line.startswith("  ") and found:
            found[-1] = (found[-1][0], found[-1][1] + "\n" + line)
    return found


def main() -> int:
    why = missing_requirements()
    if why:
        print(json.dumps({"bench": "network", "skipped": why}))
        return 0
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "nodeagent/tests/test_netns.py"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "MSEPORTAL_VAR_DIR": os.environ.get("MSEPORTAL_VAR_DIR", str(REPO / "var" / "bench-network"))},
    )  # fmt: skip
    figures = []
    for title, text in blocks(run.stdout):
        outage, dual, lost = OUTAGE.search(text), DUAL.search(text), LOST.search(text)
        wait = WAIT.search(text)
        row: dict = {"bench": "network_scenario", "scenario": title, "wait_s": float(wait["w"]) if wait else None}
        if outage and wait:
            row |= {"outage_s": float(outage["s"]), "floor_wait_s": float(wait["w"]),
                    "outage_over_wait": float(outage["r"])}  # fmt: skip
        if dual:
            row["dual_ownership_s"] = float(dual["s"])
        if lost:
            row |= {"acknowledged_writes_lost": int(lost["lost"]), "acknowledged": int(lost["acked"])}
        figures.append(row)
        print(json.dumps(row))
    bad = [
        f"{r['scenario']} (wait {r['wait_s']} s)"
        for r in figures
        if r.get("acknowledged_writes_lost", 0) or r.get("dual_ownership_s", 0)
    ]
    ok = run.returncode == 0 and figures and not bad
    tail = run.stdout.strip().splitlines()[-1:] if run.stdout.strip() else []
    print(json.dumps({"bench": "network_total", "scenarios": len(figures), "pytest": tail, "ok": bool(ok),
                      "lost_or_two_owners": bad}))  # fmt: skip
    if not ok:
        sys.stderr.write(run.stdout[-4000:] + run.stderr[-2000:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
