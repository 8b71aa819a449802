"""Every write to the domain model goes through here.

Functions are ``<entity>_<verb>(*, ...)``: keyword-only, validated before saving,
atomic, and each records an HA event. Views, forms, admin actions, API handlers and
tasks call these and nothing else that writes. Modules by entity; all re-exported.
"""

from hapairs.services._common import PORTAL, ServiceError, event_record
from hapairs.services.alerts import alert_queue, alert_raise, license_expiry_check
from hapairs.services.appliances import (
    ApplianceInUse,
    appliance_add,
    appliance_create,
    appliance_delete,
    appliance_discover,
    appliance_set_password,
    appliance_update,
)
from hapairs.services.certificates import (
    appliance_certificate_trust,
    certificate_pinned_record,
    certificate_refused_record,
)
from hapairs.services.deliveries import delivery_create, delivery_retry
from hapairs.services.drills import (
    drill_history,
    drill_refusal,
    drill_schedule_remove,
    drill_schedule_set,
    drill_start,
    drills_due,
)
from hapairs.services.jobs import JobConflict, job_cancel, job_enqueue, job_failed_event, job_succeeded_event
from hapairs.services.licenses import license_remove, license_upload
from hapairs.services.operations import (
    appliance_start_services,
    ha_delete_secondary,
    ha_failback,
    ha_maintenance_set,
    ha_recover_primary,
    ha_remove_one_side,
    ha_reset_sync,
    ha_switchover,
)
from hapairs.services.pairs import PairingCheck, ha_configure, ha_configure_check, ha_pair_create, ha_update
from hapairs.services.reports import (
    report_delivery_create,
    report_schedule_create,
    report_schedule_delete,
    report_schedule_run,
    report_schedule_update,
    report_send_now,
)
from hapairs.services.status import events_ingest, status_record
from hapairs.services.tokens import api_token_issue, api_token_revoke, api_token_user

__all__ = [
    "PORTAL",
    "JobConflict",
    "PairingCheck",
    "ServiceError",
    "api_token_issue",
    "api_token_revoke",
    "api_token_user",
    "ApplianceInUse",
    "appliance_add",
    "appliance_create",
    "appliance_delete",
    "appliance_discover",
    "appliance_certificate_trust",
    "certificate_pinned_record",
    "certificate_refused_record",
    "appliance_set_password",
    "appliance_update",
    "appliance_start_services",
    "event_record",
    "events_ingest",
    "status_record",
    "ha_configure",
    "ha_configure_check",
    "ha_delete_secondary",
    "ha_failback",
    "ha_maintenance_set",
    "ha_pair_create",
    "ha_recover_primary",
    "ha_remove_one_side",
    "ha_reset_sync",
    "ha_switchover",
    "ha_update",
    "job_cancel",
    "job_enqueue",
    "job_failed_event",
    "job_succeeded_event",
    "license_remove",
    "license_upload",
]
__all__ += [  # failover drills
    "drill_history",
    "drill_refusal",
    "drill_schedule_remove",
    "drill_schedule_set",
    "drill_start",
    "drills_due",
]
__all__ += [  # health reports and alerts
    "alert_queue",
    "alert_raise",
    "delivery_create",
    "delivery_retry",
    "license_expiry_check",
    "report_delivery_create",
    "report_schedule_create",
    "report_schedule_delete",
    "report_schedule_run",
    "report_schedule_update",
    "report_send_now",
]
