"""Forms of the login pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm


class LocalLoginForm(AuthenticationForm):
    """The password step; service accounts never log in (SPEC §13: they use API tokens only).

    They have no usable password; this holds even if someone sets one in the admin.
    """

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if getattr(user, "is_service_account", False):
            raise forms.ValidationError(
                "This is a service account: it uses API tokens and cannot log in here.", code="service_account"
            )


class TOTPCodeForm(forms.Form):
    """A six-digit code from an authenticator app."""

    code = forms.CharField(
        label="Authentication code",
        min_length=6,
        max_length=6,
        strip=True,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": "[0-9]{6}",
                "autofocus": True,
            }
        ),
        help_text="The 6-digit code your authenticator app shows for BYOK Portal.",
    )

    def clean_code(self) -> str:
        code: str = self.cleaned_data["code"].replace(" ", "")
        if not code.isdigit():
            raise forms.ValidationError("Enter the 6 digits shown by your authenticator app.")
        return code
