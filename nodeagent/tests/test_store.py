"""The agent's files: an append-only log stays whole when the disk refuses part of a line."""

from __future__ import annotations

import json
import subprocess
import sys

from .agentutil import REPO

# a child process (the limit is per process): appends until the file's size limit refuses
# one, then twice more, and prints what each append did
CHILD = r"""
import json, resource, signal, sys
sys.path.insert(0, sys.argv[1])
from nodeagent.store import AppendLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the limit as an error (EFBIG), not a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
log = AppendLog(sys.argv[2])
said, refused = [], 0
for i in range(1000):
    try:
        log.append({"mac": f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", "lsn": i, "pad": "x" * 37})
        said.append(["ok", i])
    except OSError as e:
        said.append(["refused", i, e.errno, str(e)])
        refused += 1
        if refused == 3:
            break
print(json.dumps(said))
"""


def test_a_line_the_disk_refuses_part_of_is_taken_back_and_the_log_reads_whole(tmp_path):
    path = tmp_path / "instance.jsonl"
    limit = 1000  # not a multiple of a line: the refused append is cut in its middle
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(path), str(limit)],
                         capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    said = json.loads(out.stdout)
    ok = [s[1] for s in said if s[0] == "ok"]
    refused = [s for s in said if s[0] == "refused"]
    assert ok == list(range(len(ok))) and len(refused) == 3, said
    assert "a short write" in refused[0][3] and "taken back" in refused[0][3], "the first refusal was a short write"
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and len(raw) <= limit, "no torn line is left at the end"
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [r["lsn"] for r in lines] == ok, "every acknowledged line, whole, and nothing else"
