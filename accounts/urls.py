"""Login, second factor, logout and "my account" pages.

Route names are global (no namespace) because Django's ``LOGIN_URL`` and
``LOGOUT_REDIRECT_URL`` settings name ``login``.
"""

from django.urls import path

from accounts import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("login/verify/", views.otp_verify_view, name="otp_verify"),
    path("login/enrol/", views.otp_enrol_view, name="otp_enrol"),
    path("logout/", views.logout_view, name="logout"),
    path("", views.account_view, name="account"),
]
