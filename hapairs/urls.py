from django.urls import path, re_path

from hapairs import views
from hapairs.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("mse/", views.mse_list, name="mse_list"),
    path("mse/add/", views.mse_add, name="mse_add"),
    path("mse/<str:name>/", views.mse_detail, name="mse_detail"),
    path("mse/<str:name>/add/<str:step>/", views.mse_add_step, name="mse_add_step"),
    re_path(r"^mse/(?P<name>[^/]+)/(?P<what>hainfo|serverinfo)\.txt$", views.mse_agent_text, name="mse_agent_text"),
    path("mse/<str:name>/ha/", views.ha_status, name="ha_status"),
    path("mse/<str:name>/ha/configure/", views.ha_configure, name="ha_configure"),
    path("mse/<str:name>/ha/refresh/", views.ha_refresh, name="ha_refresh"),
    path("mse/<str:name>/ha/maintenance/", views.ha_maintenance, name="ha_maintenance"),
    path("mse/<str:name>/ha/delete/", views.ha_delete, name="ha_delete"),
    path("mse/<str:name>/ha/recover/", views.ha_recover, name="ha_recover"),
    path("mse/<str:name>/ha/<str:action>/", views.ha_switch, name="ha_switch"),
    path("ha/", views.ha_overview, name="ha_overview"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("licences/", views.licence_list, name="licence_list"),
    path("licences/upload/", views.licence_upload, name="licence_upload"),
    path("licences/<int:file_id>/remove/", views.licence_remove, name="licence_remove"),
    path("api/v1/", api.urls),
]
