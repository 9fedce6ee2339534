"""REST endpoints (SPEC §6): thin DRF views over the service functions."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
