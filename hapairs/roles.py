"""Roles (DESIGN.md security model) as Django groups with model permissions.

* Admin: everything (appliances, users, licenses, pairs).
* Operator: read everything; pair, activate, upload licenses, switch over, fail back.
* Monitor: read-only.

``sync_groups`` is idempotent: the migration calls it, and so may a later one after
permissions change.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions

ADMIN, OPERATOR, MONITOR = "Admin", "Operator", "Monitor"
ROLES = (ADMIN, OPERATOR, MONITOR)

_MODELS = ("appliance", "hapair", "job", "haevent", "license", "licensefile", "reportschedule", "delivery", "alert")
_VIEW = [("hapairs", f"view_{model}") for model in _MODELS]
_EDIT_REPORTS = [("hapairs", f"{action}_reportschedule") for action in ("add", "change", "delete")]

ROLE_PERMISSIONS: dict[str, list[tuple[str, str]] | str] = {
    ADMIN: "__all__",
    OPERATOR: [
        *_VIEW,
        ("hapairs", "operate_hapair"),
        ("hapairs", "add_licensefile"),
        *_EDIT_REPORTS,
        ("hapairs", "view_auditentry"),
    ],
    MONITOR: list(_VIEW),
}
OPERATE = "hapairs.operate_hapair"
LICENSES = "hapairs.add_licensefile"  # upload licenses (and remove them: "Delete Secondary Activation license")
ADMINISTER = "hapairs.add_appliance"
AUDIT = "hapairs.view_auditentry"  # the Audit page, its exports and its API (Admin, Operator)
REPORTS = "hapairs.change_reportschedule"  # edit report schedules, Send now, retry a delivery, the mailbox


def sync_groups(apps, schema_editor=None) -> None:
    """Create the three groups and give each exactly its permissions."""
    # Permissions are normally made after all migrations (post_migrate): make them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, wanted in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        if wanted == "__all__":
            perms = Permission.objects.filter(content_type__app_label__in=["hapairs", "auth"])
        else:
            perms = [
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
                for app_label, codename in wanted
                if _model_exists(apps, app_label, codename)
            ]
        group.permissions.set(perms)


def _model_exists(apps, app_label: str, codename: str) -> bool:
    """An early migration runs this before later models exist (their permissions come
    with the migration that adds them, which calls sync_groups again)."""
    action, _, model = codename.partition("_")
    if action not in {"add", "change", "delete", "view"}:
        return True  # a custom permission: it must exist
    try:
        apps.get_model(app_label, model)
    except LookupError:
        return False
    return True


def role_of(user) -> str | None:
    """The strongest role the user holds (superusers are Admin)."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))
    return next((role for role in ROLES if role in names), None)


def token_allows(scope: str | None, permission: str) -> bool:
    """What an API token's scope lets through (its user's role still decides too): read,
    every view permission (the audit trail's too); operate, an Operator's; admin, everything."""
    if scope is None or scope == "admin":
        return True
    app_label, _, codename = permission.partition(".")
    if scope == "read":
        return codename.startswith("view_")
    return (app_label, codename) in ROLE_PERMISSIONS[OPERATOR]


def refusal(user, permission: str, what: str) -> str:
    """Why ``user`` may not ``what`` ("" when their role, and their token's scope, may):
    the one sentence the pages (403) and the API (403) answer with."""
    if not user.has_perm(permission):
        return f"Your role ({role_of(user) or 'no role'}) may not {what}."
    scope = getattr(user, "token_scope", None)
    if not token_allows(scope, permission):
        return f"This API token's scope ({scope}) may not {what}."
    return ""
