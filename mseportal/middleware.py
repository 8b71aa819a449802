"""Project middleware."""

from django.contrib.auth.middleware import LoginRequiredMiddleware


class LoginRequiredExceptApiMiddleware(LoginRequiredMiddleware):
    """Login on every page; the REST API authenticates each request itself (token or
    session, see hapairs.api), and answers 401 rather than redirecting to a login form."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        if not getattr(view_func, "login_required", True):
            # /healthz: Django's own asks who the user is first, which reads the session from
            # the database; a probe must answer (503) while that database is down
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
