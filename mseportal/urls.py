"""URL configuration."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from hapairs import views as hapairs_views

admin.site.site_header = "mseportal administration"
admin.site.site_title = "mseportal"

handler500 = "hapairs.views.health.server_error"  # a database or broker down: a 503 that says so

urlpatterns = [
    path("healthz", hapairs_views.healthz, name="healthz"),
    path("metrics", hapairs_views.metrics, name="metrics"),
    path("login/", auth_views.LoginView.as_view(template_name="registration/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("hapairs.urls")),
]
