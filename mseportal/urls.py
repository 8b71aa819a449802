"""URL configuration."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import Http404
from django.urls import include, path

from hapairs import views as hapairs_views

admin.site.site_header = "mseportal administration"
admin.site.site_title = "mseportal"


class LoginView(auth_views.LoginView):
    """Django's, saying which single sign-on is on (the OIDC button, the LDAP hint)."""

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            sso_ldap=bool(settings.MSEPORTAL_LDAP), sso_oidc=settings.MSEPORTAL_OIDC.get("PROVIDER_NAME", ""), **kwargs
        )


def _oidc_view(name: str):
    from mozilla_django_oidc import views as oidc_views

    view = getattr(oidc_views, name).as_view()

    @login_not_required
    def guarded(request, *args, **kwargs):
        if not settings.MSEPORTAL_OIDC:
            raise Http404("Single sign-on (OIDC) is not configured.")
        return view(request, *args, **kwargs)

    return guarded


handler500 = "hapairs.views.health.server_error"  # a database or broker down: a 503 that says so

urlpatterns = [
    path("healthz", hapairs_views.healthz, name="healthz"),
    path("metrics", hapairs_views.metrics, name="metrics"),
    path("login/", LoginView.as_view(template_name="registration/login.html"), name="login"),
    # single sign-on through the IdP (hapairs.sso, docs/sso.md): 404 while OIDC is off
    path("oidc/authenticate/", _oidc_view("OIDCAuthenticationRequestView"), name="oidc_authentication_init"),
    path("oidc/callback/", _oidc_view("OIDCAuthenticationCallbackView"), name="oidc_authentication_callback"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("hapairs.urls")),
]
