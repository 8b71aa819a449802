"""Send one health report now, through the configured e-mail (EMAIL_URL), and say what happened.

    python manage.py send_health_report --to noc@example.net [--to …] [--period-days 7]

The report is recorded in the delivery log like any other; the command makes one attempt
(no retries: it is there to try the mail settings) and exits non-zero if it failed.
"""

from __future__ import annotations

import sys
import uuid

from django.core.management.base import BaseCommand, CommandError

from hapairs import delivery as sender
from hapairs import services
from hapairs.choices import DeliveryStatus
from hapairs.delivery import describe_backend
from hapairs.models import REPORT_PERIOD_MAX_DAYS
from hapairs.services.reports import parse_recipients


class Command(BaseCommand):
    help = "Send one health report now through the configured e-mail (EMAIL_URL) and print what it did."

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def one_line_error(message: str):
            sys.stderr.write(f"send_health_report: {message} (try --help)\n")
            sys.exit(2)

        parser.error = one_line_error
        return parser

    def add_arguments(self, parser):
        parser.add_argument(
            "--to",
            action="append",
            required=True,
            metavar="ADDRESS",
            help="a recipient; repeat it, or separate addresses with commas",
        )
        parser.add_argument(
            "--period-days",
            type=int,
            default=1,
            metavar="N",
            help=f"how many days the report looks back (1–{REPORT_PERIOD_MAX_DAYS}; default 1)",
        )

    def handle(self, *args, to: list[str], period_days: int, **options):
        if not 1 <= period_days <= REPORT_PERIOD_MAX_DAYS:
            raise CommandError(f"--period-days must be 1 to {REPORT_PERIOD_MAX_DAYS}, not {period_days}.")
        try:
            recipients = parse_recipients(",".join(to), field="to")
        except services.ServiceError as exc:
            raise CommandError(f"--to: {exc.message}") from None
        delivery = services.report_delivery_create(
            recipients=recipients, period_days=period_days, key=f"report:cli:{uuid.uuid4().hex}", queue=False
        )
        self.stdout.write(f"Built the health report: {delivery.subject}")
        status = sender.attempt(delivery.pk, final=True)
        delivery.refresh_from_db()
        where = describe_backend()
        if status != DeliveryStatus.SENT:
            raise CommandError(
                f"Could not send it to {', '.join(recipients)} via {where}: {delivery.last_error} "
                f"(delivery #{delivery.pk}, recorded as failed; retry it from the Reports page)."
            )
        self.stdout.write(
            f"Sent it to {', '.join(recipients)} via {where} (delivery #{delivery.pk}, "
            f"{len(delivery.body_text)} characters of text and {len(delivery.body_html)} of HTML)."
        )
