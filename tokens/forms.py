"""The API tokens page's forms."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet

from keystores.models import Keystore
from tokens.models import MAX_EXPIRY_DAYS, Scope


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “deploy pipeline”.")
    scope = forms.ChoiceField(
        choices=Scope.choices,
        initial=Scope.READ,
        widget=forms.RadioSelect,
        help_text="Read tokens may only look (GET); write tokens may do anything the account may.",
    )
    expires_in_days = forms.IntegerField(
        label="Expires in (days)", min_value=1, max_value=MAX_EXPIRY_DAYS, initial=90, help_text="At most 365 days."
    )
    keystores = forms.ModelMultipleChoiceField(
        queryset=Keystore.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every keystore the account can reach.",
    )

    def __init__(self, *args: Any, keystores: QuerySet[Keystore], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field: Any = self.fields["keystores"]
        field.queryset = keystores.order_by("name")


class ServiceAccountForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="e.g. “ci-deploy”. It never logs in; it has tokens.")
    email = forms.EmailField(required=False, help_text="Who to reach about it.")
