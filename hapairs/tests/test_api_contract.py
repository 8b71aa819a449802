"""The API's contract, checked by Schemathesis against the running portal over HTTP, on the
suite's database (PostgreSQL in CI): every check of every operation, examples, coverage and
fuzzing, positive and negative. It fails on a server error, a response that does not match
its schema or declares no such status, a schema-valid request refused as invalid (400), and a
schema-invalid one accepted. It fails, as seen while it was written, when the events'
``since`` / ``until`` lose their RFC 3339 check (pydantic takes ``until=0.5`` for a time:
ST201), when a made-up cursor is a 400 (a schema-valid request refused: ST202), or when an
operation answers a status it does not declare. Bodies that are wrong-typed or carry unknown
members are test_api's (strict, closed schemas): Schemathesis does not send those.

The portal calls agents only on loopback here (``AGENT_ALLOWED_NETWORKS``), and none
answers: the addresses Schemathesis makes up are never called."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hapairs import services

from .test_api import token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CONFIG = """
[checks.positive_data_acceptance]
# a request the schema takes may still be refused by the rules (422), found missing (404),
# or be "not now" (409): none of these says the request was malformed
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

# the appliances the test made, for the operations on one (else nearly all would be 404s)
[dictionaries.appliances]
values = ["c-p", "c-s", "c-alone"]

[dictionaries.ids]
values = [1, 2]

[parameters]
"path.name" = { dictionary = "appliances", probability = 0.8 }
"path.schedule_id" = { dictionary = "ids", probability = 0.8 }
"path.delivery_id" = { dictionary = "ids", probability = 0.8 }

# these two relay the agent's own output: when it cannot be read they answer as a gateway
# does (502: it answered with something else, 503: it cannot be reached), as they declare
[[operations]]
include-path-regex = "/(hainfo|serverinfo)$"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502", "503"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "502", "503"]
"""


def schemathesis(url: str, token: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
        f"{url}/api/v1/openapi.json", "--header", f"Authorization: Bearer {token}",
        "--checks", "all", "--mode", "all", "--phases", "examples,coverage,fuzzing",
        "--max-examples", "10", "--seed", "20261202", "--no-color", "--workers", "1", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=workdir)


def test_schemathesis_finds_no_failure_of_any_check(live_server, admin_user_, make_appliance, settings, tmp_path):
    settings.AGENT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    # something for the operations to find: a 3355 pair, and an appliance on its own
    primary = make_appliance(
        name="c-p", device_type="3355", hm_ip="127.31.0.2", vip="127.31.0.1", vip_prefixlen=24, role="primary"
    )
    secondary = make_appliance(name="c-s", device_type="3355", hm_ip="127.31.0.3", role="secondary")
    make_appliance(name="c-alone", device_type="3355", hm_ip="127.31.0.4")
    services.ha_pair_create(primary=primary, secondary=secondary)
    schedule = services.report_schedule_create(name="daily", recipients="noc@example.net")
    services.report_send_now(schedule=schedule)
    token = token_for(admin_user_)
    run = schemathesis(live_server.url, token, tmp_path)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert "No issues found" in run.stdout or " passed" in run.stdout, run.stdout[-3000:]
