"""Every read the pages, the API and the services need, with bounded query counts."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

from hapairs import rules
from hapairs.choices import LicenseStatus
from hapairs.models import Appliance, License

ACTIVATION_FEATURE = "MSE_ACTIVATION"


def active_licenses(appliance: Appliance) -> QuerySet[License]:
    """Licences installed on the appliance that have not expired."""
    today = timezone.localdate()
    return License.objects.filter(installed_on=appliance, status=LicenseStatus.INSTALLED).filter(
        Q(expires_on__isnull=True) | Q(expires_on__gte=today)
    )


def appliance_is_activated(appliance: Appliance) -> bool:
    """A VA is activated while it holds an installed, unexpired activation licence."""
    return active_licenses(appliance).filter(feature=ACTIVATION_FEATURE).exists()


def node_facts(appliance: Appliance) -> rules.NodeFacts:
    return rules.NodeFacts(
        name=appliance.name,
        device_type=appliance.device_type,
        version=appliance.version,
        hm_ip=appliance.hm_ip,
        vip=appliance.vip,
        vip_prefixlen=appliance.vip_prefixlen,
        activated=appliance_is_activated(appliance) if appliance.is_virtual else True,
        role=appliance.role,
    )
