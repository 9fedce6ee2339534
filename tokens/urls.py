"""API token pages, mounted at ``/tokens/``."""

from django.urls import path

from tokens import views

app_name = "tokens"

urlpatterns = [
    path("", views.token_list, name="list"),
    path("<str:token_id>/revoke/", views.token_revoke, name="revoke"),
    path("service-accounts/", views.service_account_list, name="service-accounts"),
    path("service-accounts/<int:user_id>/tokens/new/", views.service_account_token, name="service-account-token"),
]
