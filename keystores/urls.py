"""Keystore pages, mounted at ``/keystores/``."""

from django.urls import path

from keystores import views

app_name = "keystores"

urlpatterns = [
    path("", views.keystore_list, name="list"),
    path("new/", views.keystore_create, name="create"),
    path("<uuid:keystore_id>/", views.keystore_detail, name="detail"),
    path("<uuid:keystore_id>/edit/", views.keystore_edit, name="edit"),
    path("<uuid:keystore_id>/test-connection/", views.keystore_test_connection, name="test-connection"),
    path("<uuid:keystore_id>/sandbox-role/", views.keystore_sandbox_create_role, name="sandbox-create-role"),
    path("<uuid:keystore_id>/delete/", views.keystore_delete, name="delete"),
    path("<uuid:keystore_id>/members/", views.member_set, name="member-set"),
    path("<uuid:keystore_id>/members/<int:user_id>/remove/", views.member_remove, name="member-remove"),
]
