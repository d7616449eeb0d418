"""API routes for instances."""

urlpatterns: list = []
