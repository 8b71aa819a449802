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


class AuditContextMiddleware:
    """Each request's writes are audited (hapairs.audit) as coming from a page, the API or
    an agent (the ingest), by the request's user, under its request id: the caller's
    ``X-Request-ID`` when it is a sane token, else a new one, sent back in the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from hapairs.audit import audit_context, request_id_from
        from hapairs.choices import AuditSource

        path = request.path_info
        if path.startswith("/api/v1/ingest"):
            source, name = AuditSource.AGENT, "agent"
        elif path.startswith("/api/"):
            source, name = AuditSource.API, ""
        else:
            source, name = AuditSource.PAGE, ""
        request_id = request_id_from(request.headers.get("X-Request-ID"))
        with audit_context(source, request_id=request_id, user=lambda: getattr(request, "user", None), name=name):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
