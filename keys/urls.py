"""Key pages, mounted at ``/keys/``."""

from django.urls import path

from keys import views

app_name = "keys"

urlpatterns = [
    path("", views.key_list, name="list"),
    path("new/", views.key_create, name="create"),
    path("<uuid:key_id>/", views.key_detail, name="detail"),
    path("<uuid:key_id>/edit/", views.key_edit, name="edit"),
    path("<uuid:key_id>/prepare-download/", views.key_prepare_download, name="prepare-download"),
    path("<uuid:key_id>/download/", views.key_download, name="download"),
    # deactivate, activate, upload, renew, schedule-deletion, cancel-deletion, recreate (keys.operations.BUTTONS)
    path("<uuid:key_id>/<slug:action>/", views.key_action, name="action"),
]
