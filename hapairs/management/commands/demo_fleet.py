"""Register the demo fleet's appliances and pair them, through the same services the UI uses.

`make run` starts the agents of ``fleet/demo.toml`` and then this command, which waits
for them, adds every appliance (the portal discovers each one over its signed API), gives
every virtual appliance a development activation license bound to its UDI (signed with
the development key, as ``mklicense`` does, and uploaded through ``license_upload``) and
configures the pairs listed in ``fleet/demo-paired.toml``. The first pair with Automatic
failover gets the witness ``make run`` starts (``Procfile.dev``: 127.10.10.50:8002, on
loopback only). Re-running it changes nothing that is already there. Development only
(the fleet's passwords are public).
"""

from __future__ import annotations

import ipaddress
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from hapairs import licenses, selectors, services
from hapairs.choices import VIRTUAL_TYPES
from hapairs.management.commands.mklicense import DEV_PRIVATE_KEY
from hapairs.models import Appliance, HAPair
from nodeagent.config import ConfigError, load_fleet
from nodeagent.haconfig import check_witness
from nodeagent.protocol import Mode

# the witness of Procfile.dev (same address, same password)
DEMO_WITNESS = "127.10.10.50:8002"
DEMO_WITNESS_PASSWORD = "demo-witness"


class Command(BaseCommand):
    help = "Register and pair the demo fleet (DEBUG only)."

    def add_arguments(self, parser):
        parser.add_argument("--fleet", default="fleet/demo.toml", help="the agents' fleet file (nodes)")
        parser.add_argument(
            "--pairs", default="fleet/demo-paired.toml", help="a fleet file whose [[pair]]s to configure"
        )
        parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the agents to answer")
        parser.add_argument(
            "--witness",
            default=DEMO_WITNESS,
            help="the loopback IP:PORT of the witness the first Automatic-failover pair gets ('' for none)",
        )
        parser.add_argument("--witness-password", default=DEMO_WITNESS_PASSWORD, help="the password it runs with")

    def handle(self, *args, fleet: str, pairs: str, wait: float, witness: str, witness_password: str, **options):
        if not settings.DEBUG:
            raise CommandError("The demo fleet's passwords are public: it is registered only with DEBUG=1.")
        if wait < 0:
            raise CommandError("--wait must be zero or more seconds.")
        witnesses = self._demo_witnesses(witness)
        try:
            nodes = load_fleet(fleet).nodes
            wanted_pairs = load_fleet(pairs).pairs
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        by = get_user_model().objects.filter(username="admin").first()

        for node in nodes.values():
            if Appliance.objects.filter(name=node.name).exists():
                continue
            appliance = self._add_when_up(node, wait=wait, by=by)
            self.stdout.write(f"added {appliance.name} ({appliance.get_device_type_display()}, {appliance.hm_ip})")

        self._activate_virtual_appliances(list(nodes), by=by)

        for declared in wanted_pairs:
            primary = Appliance.objects.filter(name=declared.primary).first()
            secondary_node = nodes.get(declared.secondary)
            if primary is None or secondary_node is None:
                self.stdout.write(f"skipped {declared.primary} → {declared.secondary}: not in {fleet}")
                continue
            if HAPair.objects.filter(primary=primary).exists():
                continue
            config = declared.config
            witnessed = bool(witnesses) and config.failover_type is Mode.AUTOMATIC
            try:
                _pair, job = services.ha_configure(
                    primary=primary,
                    secondary_name=secondary_node.name,
                    secondary_ip=secondary_node.hm_ip,
                    secondary_password=secondary_node.password,
                    failover_type=config.failover_type.value.lower(),
                    failback_type=config.failback_type.value.lower(),
                    failover_wait=int(config.failover_wait),
                    witnesses=witnesses if witnessed else (),
                    witness_password=witness_password if witnessed else "",
                    by=by,
                    reason="demo fleet",
                )
            except services.ServiceError as exc:
                self.stdout.write(f"not paired {primary.name} → {secondary_node.name}: {exc.message}")
                continue
            with_witness = f", witness {witnesses[0]}" if witnessed else ""
            self.stdout.write(f"pairing {primary.name} → {secondary_node.name}{with_witness} (job #{job.pk})")
            if witnessed:
                witnesses = []  # one pair shows it; the others show the no-witness risk
        self.stdout.write("Demo fleet ready: open http://127.0.0.1:8000/")

    @staticmethod
    def _demo_witnesses(witness: str) -> list[str]:
        """The demo's witness, on loopback only: a development machine never asks another host."""
        if not witness:
            return []
        try:
            address = check_witness(witness)
        except ValueError as exc:
            raise CommandError(f"--witness: {exc}") from None
        if not ipaddress.IPv4Address(address.partition(":")[0]).is_loopback:
            raise CommandError(f"--witness: {address} is not a loopback address; the demo stays on this machine.")
        return [address]

    def _activate_virtual_appliances(self, names: list[str], *, by) -> None:
        """A VA pairs only once activated (MSE-HA-SPEC §2 rule 7): upload a development
        activation license for each VA of the fleet that has none; its job installs it."""
        key = licenses.load_private_key(DEV_PRIVATE_KEY.read_bytes())
        virtual = Appliance.objects.filter(name__in=names, device_type__in=VIRTUAL_TYPES).order_by("name")
        for appliance in virtual:
            if selectors.appliance_is_activated(appliance):
                continue
            if not appliance.udi:
                self.stdout.write(f"not activated {appliance.name}: its UDI is not known")
                continue
            text = licenses.render_license_file(
                [licenses.LicenseSpec(licenses.ACTIVATION_FEATURE, 1, host_udi=appliance.udi)],
                key,
                comment=f"Development activation license for {appliance.name} (demo fleet; DEBUG only)",
            )
            try:
                _file, job = services.license_upload(
                    appliance=appliance,
                    filename=f"{appliance.name}-activation-dev.lic",
                    data=text.encode("ascii"),
                    by=by,
                    reason="demo fleet",
                )
            except services.ServiceError as exc:
                self.stdout.write(f"not activated {appliance.name}: {exc.message}")
                continue
            self.stdout.write(f"activating {appliance.name} (job #{job.pk})")

    def _add_when_up(self, node, *, wait: float, by):
        deadline = time.monotonic() + wait
        while True:
            try:
                return services.appliance_add(name=node.name, ip=node.hm_ip, password=node.password, by=by)
            except services.ServiceError as exc:
                if "Cannot reach" not in exc.message or time.monotonic() > deadline:
                    raise CommandError(f"{node.name}: {exc.message}") from None
                time.sleep(0.5)
