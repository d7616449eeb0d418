"""Write (or check) the API reference in docs/ from the OpenAPI schema."""

from django.core.management.base import BaseCommand, CommandError

from ops import apidocs


class Command(BaseCommand):
    help = "Regenerate docs/openapi.yaml and docs/api.md from the schema (--check: only compare)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--check", action="store_true", help="Exit 1 if a file differs; write nothing."
        )

    def handle(self, *args, check=False, **options):
        stale = []
        for path, text in apidocs.render().items():
            current = path.read_text() if path.exists() else None
            if current == text:
                continue
            stale.append(path.name)
            if not check:
                path.write_text(text)
                self.stdout.write(f"wrote {path}")
        if check and stale:
            raise CommandError(
                f"stale: {', '.join(stale)}; run `.venv/bin/python manage.py api_docs`"
            )
        if not stale:
            self.stdout.write("docs/openapi.yaml and docs/api.md are current")
