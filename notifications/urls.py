"""Notification pages, mounted at ``/notifications/``."""

from django.urls import path

from notifications import views

app_name = "notifications"

urlpatterns = [
    path("preferences/", views.preferences, name="preferences"),
    path("keystores/<uuid:keystore_id>/webhooks/", views.webhooks, name="webhooks"),
]
