"""The steps of each job kind, run against the agents (see docs/agent-api.md).

Every mutating request carries the job's step key as its Idempotency-Key, so a step
re-run after a crash gets the agent's first answer instead of acting twice. Waiting
steps poll the agents through the same poller the beat task uses, so what the job
sees is exactly what the pages show.

``STEPS`` holds each kind's steps as data (next to each kind's functions, in the modules
below); ``HapairsConfig.ready()`` hands them to the runner (``register_all``), so
``jobs.run`` finds them in every process, whoever imports what.
"""

from __future__ import annotations

from hapairs import drills as _drills
from hapairs.choices import JobKind
from hapairs.jobs import Step, register
from hapairs.jobsteps import drills, licenses, lifecycle, pairing, switching
from hapairs.jobsteps.licenses import (  # noqa: F401  (the steps, by name)
    install_license,
    install_pending_licenses,
    record_license_removed,
    remove_license_from_agent,
)
from hapairs.jobsteps.lifecycle import (  # noqa: F401  (the steps, by name)
    delete_on_primary,
    delete_on_secondary,
    delete_pair_row,
    recover_check,
    recover_pin_primary_on_secondary,
    recover_restore_primary,
    recover_secondary_in_charge,
    recover_wait_terminated,
    start_services,
    wait_services_up,
)
from hapairs.jobsteps.pairing import (  # noqa: F401  (the steps, by name)
    configure_primary,
    configure_secondary,
    maintenance_primary,
    maintenance_record,
    maintenance_secondary,
    record_parameters,
    set_trap_destinations,
    update_primary,
    update_secondary,
    wait_until_active,
)
from hapairs.jobsteps.switching import (  # noqa: F401  (the steps, by name)
    check_generation,
    failback_invoke,
    start_primary_services,
    switchover_invoke,
    wait_failback_done,
    wait_failover_active,
)

STEPS: dict[str, list[Step]] = {
    **licenses.STEPS, **pairing.STEPS, **switching.STEPS, **lifecycle.STEPS, **drills.STEPS,
}  # fmt: skip
AT_END = {JobKind.DRILL: _drills.probe_drop}  # however a drill's job ends here, its probe stops


def register_all() -> None:
    """Give the job runner every kind's steps; ``HapairsConfig.ready()`` calls this once."""
    for kind, steps in STEPS.items():
        register(kind, steps, at_end=AT_END.get(kind))
