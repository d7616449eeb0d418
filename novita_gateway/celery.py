"""Celery application: broker and schedule come from Django settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "novita_gateway.settings")

app = Celery("novita_gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
