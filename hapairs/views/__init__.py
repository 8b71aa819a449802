"""Pages. One view per page; HTMX requests get the page's named partial
(django-template-partials), so a piece and its page never drift apart."""

from hapairs.views.appliances import (
    home,
    mse_add,
    mse_add_step,
    mse_agent_text,
    mse_certificate,
    mse_certificate_trust,
    mse_detail,
    mse_list,
)
from hapairs.views.audit import audit_list
from hapairs.views.ha import (
    ha_configure,
    ha_delete,
    ha_drill,
    ha_maintenance,
    ha_overview,
    ha_recover,
    ha_refresh,
    ha_reset_sync,
    ha_status,
    ha_switch,
)
from hapairs.views.health import healthz
from hapairs.views.jobs import job_cancel, job_detail, job_list
from hapairs.views.licenses import license_list, license_remove, license_upload
from hapairs.views.metrics import metrics
from hapairs.views.reports import (
    report_delivery,
    report_delivery_retry,
    report_list,
    report_mailbox,
    report_mailbox_message,
    report_preview,
    report_schedule_delete,
    report_schedule_edit,
    report_send,
)

__all__ = [
    "audit_list",
    "ha_configure",
    "ha_delete",
    "ha_maintenance",
    "ha_overview",
    "ha_recover",
    "ha_refresh",
    "ha_status",
    "ha_drill",
    "ha_reset_sync",
    "ha_switch",
    "healthz",
    "metrics",
    "home",
    "job_cancel",
    "job_detail",
    "job_list",
    "license_list",
    "license_remove",
    "license_upload",
    "mse_add",
    "mse_add_step",
    "mse_agent_text",
    "mse_certificate",
    "mse_certificate_trust",
    "mse_detail",
    "mse_list",
    "report_delivery",
    "report_delivery_retry",
    "report_list",
    "report_mailbox",
    "report_mailbox_message",
    "report_preview",
    "report_schedule_delete",
    "report_schedule_edit",
    "report_send",
]
