"""The domain model: appliances, licenses, HA pairs, jobs and HA events.

Rows are written only through ``hapairs.services``; the constraints below make the
impossible states impossible in the database itself, under concurrency too:

* a secondary backs at most two primaries: each pair takes one of the secondary's two
  *slots*, unique per secondary, and the slot is checked to be 1 or 2;
* an appliance is primary of at most one pair (``primary`` is one-to-one);
* a pair never has two active jobs (a partial unique index over active statuses);
* an agent event is stored once per (appliance, sequence number).

The counts the pages show (appliances, secondaries, a pair's events) are ``Tally`` rows
kept by database triggers in the statement that changes them (``summaries.py``), as is
the list of secondaries the HA overview walks by name (``SecondaryListing``).
"""

from hapairs.models.activity import ApiToken, AuditEntry, Drill, DrillSchedule, HAEvent, Job
from hapairs.models.fleet import (
    FAILOVER_WAIT_DEFAULT,
    FAILOVER_WAIT_MAX,
    FAILOVER_WAIT_MIN,
    Appliance,
    HAPair,
    HeartbeatSample,
    License,
    LicenseFile,
    device_name_validator,
    version_validator,
)
from hapairs.models.reports import (
    REPORT_PERIOD_MAX_DAYS,
    Alert,
    AlertThrottle,
    Delivery,
    ReportSchedule,
)
from hapairs.models.summaries import SecondaryListing, Tally

__all__ = [
    "FAILOVER_WAIT_DEFAULT",
    "FAILOVER_WAIT_MAX",
    "FAILOVER_WAIT_MIN",
    "REPORT_PERIOD_MAX_DAYS",
    "Alert",
    "AlertThrottle",
    "Appliance",
    "ApiToken",
    "AuditEntry",
    "Delivery",
    "Drill",
    "DrillSchedule",
    "HAEvent",
    "HAPair",
    "HeartbeatSample",
    "Job",
    "License",
    "LicenseFile",
    "ReportSchedule",
    "SecondaryListing",
    "Tally",
    "device_name_validator",
    "version_validator",
]
