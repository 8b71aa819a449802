"""Issue a signed license file, or make a new signing key pair (docs/licenses.md)."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hapairs import licenses

DEV_PRIVATE_KEY = Path(__file__).resolve().parents[2] / "devkeys" / "dev_license_private.pem"
PRIVATE_NAME = "license_private.pem"
PUBLIC_NAME = "license_public.pem"


def _split(values: list[str] | None) -> list[str]:
    """Repeated flags and comma lists both: ["A,B", "C"] -> ["A", "B", "C"]."""
    return [part.strip() for value in values or [] for part in value.split(",")]


class Command(BaseCommand):
    help = (
        "Write a signed license file, one INCREMENT line per feature. Give features by repeating "
        "--feature NAME --count N (the n-th --count goes with the n-th --feature) or as comma lists "
        "(--feature CAS_ELEMENTS,WIPS_MONITOR_APS --count 100,10). Signs with the development key "
        "(hapairs/devkeys/, DEBUG=1 only) unless --key is given. Or, with --generate-key DIR, make a "
        "new key pair for a real deployment."
    )

    def add_arguments(self, parser):
        features = ", ".join(licenses.FEATURES)
        parser.add_argument("--feature", action="append", metavar="NAME", help=f"a feature: {features}")
        parser.add_argument("--count", action="append", metavar="N", help="its count, a positive whole number")
        parser.add_argument("--host", metavar="UDI|ANY", help="the UDI the license is bound to, or ANY")
        parser.add_argument(
            "--expires",
            metavar="permanent|YYYY-MM-DD",
            help=f"expiry; the license is valid through that day (--evaluation defaults to today + {licenses.EVALUATION_DAYS} days)",
        )
        parser.add_argument(
            "--evaluation", action="store_true", help="mark the lines as an evaluation license (TYPE=evaluation)"
        )
        parser.add_argument(
            "--license-version",
            "--licence-version",
            dest="license_version",
            default="7.0",
            metavar="X.Y",
            help="the license version (default 7.0)",
        )
        parser.add_argument(
            "--sku",
            metavar="SKU",
            help="override the SKU (only with one feature; MSE_ACTIVATION is always L-MSE-7.0-K9)",
        )
        parser.add_argument("--out", metavar="FILE", help="where to write the license file")
        parser.add_argument("--force", action="store_true", help="overwrite --out (or --generate-key files) if present")
        parser.add_argument(
            "--key", metavar="KEYFILE", help="PEM Ed25519 private key to sign with (default: the development key)"
        )
        parser.add_argument(
            "--generate-key",
            metavar="DIR",
            help=f"write a new key pair to DIR/{PRIVATE_NAME} and DIR/{PUBLIC_NAME}, and stop",
        )

    def handle(self, *args, **options):
        if options["generate_key"]:
            issuing = [
                f"--{name}" for name in ("feature", "count", "host", "expires", "out", "key", "sku") if options[name]
            ]
            if issuing or options["evaluation"]:
                raise CommandError(
                    "--generate-key makes a key pair only; do not combine it with "
                    + ", ".join(issuing or ["--evaluation"])
                    + "."
                )
            self._generate_key(Path(options["generate_key"]), force=options["force"])
            return
        specs = self._specs(options)
        out = self._out_path(options)
        private_key = self._private_key(options["key"])
        text = licenses.render_license_file(
            specs,
            private_key,
            comment=f"MSE license file issued {date.today().isoformat()} by manage.py mklicense",
        )
        # The file must verify with the signing key's public half before it is written.
        try:
            licenses.parse_and_verify(text.encode("ascii"), trusted_keys=[private_key.public_key()], today=date.today())
        except licenses.LicenseError as exc:  # pragma: no cover - a bug, not a user error
            raise CommandError(f"The issued file does not verify: {exc}") from exc
        try:
            with open(out, "w" if options["force"] else "x", encoding="ascii", newline="\n") as handle:
                handle.write(text)
        except FileExistsError:
            raise CommandError(f"{out} already exists; pass --force to overwrite it.") from None
        except OSError as exc:
            raise CommandError(f"Cannot write {out}: {exc.strerror}.") from None
        names = ", ".join(f"{spec.feature} x {spec.count}" for spec in specs)
        self.stdout.write(f"Wrote {out}: {names}, bound to {specs[0].host_udi}.")

    # ------------------------------------------------------------------ issuing
    def _specs(self, options) -> list[licenses.LicenseSpec]:
        names = _split(options["feature"])
        counts = _split(options["count"])
        if not names:
            raise CommandError("Give at least one --feature NAME (with its --count N), or --generate-key DIR.")
        if len(names) != len(counts):
            raise CommandError(f"Give one --count per --feature: {len(names)} feature(s), {len(counts)} count(s).")
        unknown = [name for name in names if name not in licenses.FEATURES]
        if unknown:
            raise CommandError(
                f"Unknown feature {', '.join(unknown)}; known features are {', '.join(licenses.FEATURES)}."
            )
        if len(set(names)) != len(names):
            raise CommandError("A feature is given twice; give each feature once with its total count.")
        parsed_counts = []
        for name, count in zip(names, counts, strict=True):
            if not (count.isascii() and count.isdigit()) or len(count) > 9 or int(count) < 1:
                raise CommandError(f"--count {count!r} for {name} is not a positive whole number.")
            parsed_counts.append(int(count))
        host = options["host"]
        if not host:
            raise CommandError("Give --host UDI (e.g. AIR-MSE-VA-K9:V01:mse2_...) or --host ANY.")
        expires_on = self._expiry(options)
        if options["sku"] and len(names) != 1:
            raise CommandError("--sku applies to one feature only; issue features with other SKUs separately.")
        specs = [
            licenses.LicenseSpec(
                feature=name,
                count=count,
                host_udi=host,
                expires_on=expires_on,
                is_evaluation=options["evaluation"],
                version=options["license_version"],
                sku=options["sku"],
            )
            for name, count in zip(names, parsed_counts, strict=True)
        ]
        for spec in specs:  # the verifier's own rules (UDI, version, SKU, HOSTID=ANY on activation)
            try:
                licenses.check_spec(spec)
            except licenses.LicenseError as exc:
                raise CommandError(str(exc)) from None
        return specs

    def _expiry(self, options) -> date | None:
        expires = options["expires"]
        if expires is None:
            if options["evaluation"]:
                return date.today() + timedelta(days=licenses.EVALUATION_DAYS)
            raise CommandError("Give --expires permanent or --expires YYYY-MM-DD.")
        if expires == licenses.PERMANENT:
            if options["evaluation"]:
                raise CommandError(
                    "An evaluation license cannot be permanent: give --expires YYYY-MM-DD or leave it out."
                )
            return None
        try:
            expires_on = date.fromisoformat(expires) if len(expires) == 10 else None
        except ValueError:
            expires_on = None
        if expires_on is None:
            raise CommandError(f"--expires {expires!r} is neither permanent nor a date written YYYY-MM-DD.")
        if expires_on < date.today():
            raise CommandError(f"--expires {expires} is in the past; such a license would be refused as expired.")
        return expires_on

    def _out_path(self, options) -> Path:
        if not options["out"]:
            raise CommandError("Give --out FILE, where to write the license file.")
        out = Path(options["out"])
        if out.exists() and not options["force"]:
            raise CommandError(f"{out} already exists; pass --force to overwrite it.")
        if not out.parent.is_dir():
            raise CommandError(f"Cannot write {out}: the folder {out.parent} does not exist.")
        return out

    def _private_key(self, key_file: str | None) -> Ed25519PrivateKey:
        path = Path(key_file) if key_file else DEV_PRIVATE_KEY
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read the key file {path}: {exc.strerror}.") from None
        try:
            key = licenses.load_private_key(pem)
        except licenses.LicenseError as exc:
            raise CommandError(f"{path}: {exc}") from None
        if licenses.is_dev_key(key.public_key()) and not settings.DEBUG:
            raise CommandError(
                "The development key signs licenses only with DEBUG=1 (with DEBUG off the portal refuses them); "
                "pass --key with your own key (make one with --generate-key DIR)."
            )
        return key

    # ------------------------------------------------------------------ keys
    def _generate_key(self, folder: Path, *, force: bool) -> None:
        private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
        if not force:
            for path in (private_path, public_path):
                if path.exists():
                    raise CommandError(f"{path} already exists; pass --force to replace the key pair.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"Cannot create {folder}: {exc.strerror}.") from None
        key = Ed25519PrivateKey.generate()
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        descriptor = os.open(private_path, flags, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private_pem)
        os.chmod(private_path, 0o600)
        public_path.write_bytes(public_pem)
        encoded = licenses.public_key_b64(key.public_key())
        self.stdout.write(f"Wrote {private_path} (keep it secret, off the portal) and {public_path}.")
        self.stdout.write(f"Trust it on the portal with: MSEPORTAL_LICENSE_PUBLIC_KEYS={encoded}")
