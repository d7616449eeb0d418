"""The operator dashboard's route, included by the project's urls.py (staff only)."""

from django.contrib import admin
from django.urls import path

from .admin import dashboard_view

urlpatterns = [
    path("", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
]
