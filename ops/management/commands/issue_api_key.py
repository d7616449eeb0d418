"""Issue a client API key from the command line; the raw key is printed once, never stored."""

from django.core.management.base import BaseCommand, CommandError

from ops.models import ApiKey


class Command(BaseCommand):
    help = "Issue a named client API key and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Who or what the key is for, e.g. 'ci-runner'")

    def handle(self, *args, name, **options):
        name = name.strip()
        if not name:
            raise CommandError("NAME must not be empty")
        if len(name) > ApiKey._meta.get_field("name").max_length:
            raise CommandError("NAME is too long (at most 100 characters)")
        key, raw = ApiKey.issue(name)
        # The key alone goes to stdout so scripts can capture it; the notice goes to stderr.
        self.stderr.write(
            f"Issued API key {key.name!r} (prefix {key.prefix}). Store it now: "
            "it cannot be shown again."
        )
        self.stdout.write(raw)
