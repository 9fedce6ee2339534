"""Page forms of dual control: a rejection's reason, and a keystore's approval policy."""

from __future__ import annotations

from django import forms

from approvals.models import MAX_APPROVALS
from byok_portal.dual_control import ApprovalGroup
from keystores.models import Role

GROUP_HELP = {
    ApprovalGroup.DESTROY: "Schedule a key's deletion; delete the keystore.",
    ApprovalGroup.DISABLE: "Deactivate a key.",
    ApprovalGroup.CHANGE_MATERIAL: "Renew a key (and rotate, add a replica).",
    ApprovalGroup.EXPORT: "Prepare a download of a key.",
    ApprovalGroup.MEMBERSHIP: "Grant or revoke a role; change this policy.",
}


class RejectForm(forms.Form):
    reason = forms.CharField(
        label="Reason (shown to the requester and kept in the audit trail)",
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )


class ApprovalPolicyForm(forms.Form):
    """The same fields as ``ApprovalPolicySerializer``: approvals per group, approver roles, lifetime."""

    approver_roles = forms.MultipleChoiceField(
        label="Who may approve", choices=Role.choices, widget=forms.CheckboxSelectMultiple
    )
    expires_hours = forms.IntegerField(label="A request expires after (hours)", min_value=1, max_value=720, initial=24)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        for group in ApprovalGroup:
            self.fields[group.value] = forms.IntegerField(
                label=f"Approvals for “{group.value.replace('_', ' ')}”",
                min_value=0,
                max_value=MAX_APPROVALS,
                help_text=GROUP_HELP[group],
            )
