from django.urls import path, re_path
from django.views.generic import RedirectView

from hapairs import views
from hapairs.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("mse/", views.mse_list, name="mse_list"),
    path("mse/add/", views.mse_add, name="mse_add"),
    path("mse/<str:name>/", views.mse_detail, name="mse_detail"),
    path("mse/<str:name>/add/<str:step>/", views.mse_add_step, name="mse_add_step"),
    path("mse/<str:name>/certificate/", views.mse_certificate, name="mse_certificate"),
    path("mse/<str:name>/certificate/trust/", views.mse_certificate_trust, name="mse_certificate_trust"),
    re_path(r"^mse/(?P<name>[^/]+)/(?P<what>hainfo|serverinfo)\.txt$", views.mse_agent_text, name="mse_agent_text"),
    path("mse/<str:name>/ha/", views.ha_status, name="ha_status"),
    path("mse/<str:name>/ha/configure/", views.ha_configure, name="ha_configure"),
    path("mse/<str:name>/ha/refresh/", views.ha_refresh, name="ha_refresh"),
    path("mse/<str:name>/ha/maintenance/", views.ha_maintenance, name="ha_maintenance"),
    path("mse/<str:name>/ha/delete/", views.ha_delete, name="ha_delete"),
    path("mse/<str:name>/ha/recover/", views.ha_recover, name="ha_recover"),
    path("mse/<str:name>/ha/drill/", views.ha_drill, name="ha_drill"),
    path("mse/<str:name>/ha/reset-sync/", views.ha_reset_sync, name="ha_reset_sync"),
    path("mse/<str:name>/ha/<str:action>/", views.ha_switch, name="ha_switch"),
    path("ha/", views.ha_overview, name="ha_overview"),
    path("audit/", views.audit_list, name="audit_list"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("licenses/", views.license_list, name="license_list"),
    path("licenses/upload/", views.license_upload, name="license_upload"),
    path("licenses/<int:file_id>/remove/", views.license_remove, name="license_remove"),
    # The old spelling of these pages (bookmarks, links in old e-mails): a permanent redirect.
    path("licences/", RedirectView.as_view(pattern_name="license_list", permanent=True, query_string=True)),
    path("licences/upload/", RedirectView.as_view(pattern_name="license_upload", permanent=True, query_string=True)),
    path("licences/<int:file_id>/remove/", RedirectView.as_view(pattern_name="license_remove", permanent=True)),
    path("reports/", views.report_list, name="report_list"),
    path("reports/new/", views.report_schedule_edit, name="report_new"),
    path("reports/preview/", views.report_preview, name="report_preview"),
    path("reports/mailbox/", views.report_mailbox, name="report_mailbox"),
    path("reports/mailbox/<str:filename>/<int:index>/", views.report_mailbox_message, name="report_mailbox_message"),
    path("reports/deliveries/<int:delivery_id>/", views.report_delivery, name="report_delivery"),
    path("reports/deliveries/<int:delivery_id>/retry/", views.report_delivery_retry, name="report_delivery_retry"),
    path("reports/<int:schedule_id>/edit/", views.report_schedule_edit, name="report_edit"),
    path("reports/<int:schedule_id>/delete/", views.report_schedule_delete, name="report_delete"),
    path("reports/<int:schedule_id>/send/", views.report_send, name="report_send"),
    path("api/v1/", api.urls),
]
