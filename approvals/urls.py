"""Dual control pages, mounted at ``/approvals/``."""

from django.urls import path

from approvals import views

app_name = "approvals"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("<uuid:request_id>/", views.detail, name="detail"),
    path("<uuid:request_id>/approve/", views.approve, name="approve"),
    path("<uuid:request_id>/reject/", views.reject, name="reject"),
    path("<uuid:request_id>/cancel/", views.cancel, name="cancel"),
    path("<uuid:request_id>/end/", views.end, name="end"),
    path("policy/<uuid:keystore_id>/", views.policy_edit, name="policy"),
]
