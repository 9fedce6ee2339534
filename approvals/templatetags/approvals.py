"""Dual control on other apps' pages without those apps knowing it: the inbox count in the navigation, a key's
pending request on its page, and the keystore's policy on the keystore page."""

from __future__ import annotations

from typing import Any

from django import template

from accounts.identity import actor_from_request
from approvals import services
from approvals.models import ApprovalRequest
from byok_portal.dual_control import ApprovalGroup
from keystores.models import Role
from keystores.selectors import role_in

register = template.Library()


@register.simple_tag(takes_context=True)
def approvals_awaiting_count(context: dict[str, Any]) -> int:
    """How many open requests the viewer could approve now (one COUNT query)."""
    request = context["request"]
    return int(services.awaiting(request.user, actor_from_request(request).identity).count())


@register.inclusion_tag("approvals/_key_panel.html", takes_context=True)
def key_pending_approval(context: dict[str, Any], key: Any) -> dict[str, Any]:
    """The request waiting to act on ``key``: who asked, what, with which parameters, who approved.

    No query when nothing waits: the key row names its pending request.
    """
    approval = None
    if key.pending_approval:
        approval = ApprovalRequest.objects.prefetch_related("approvals").filter(pk=key.pending_approval).first()
    return {
        "approval": approval,
        "parameters": services.described(approval.parameters) if approval else {},
        "request": context["request"],
    }


@register.inclusion_tag("approvals/_policy_panel.html", takes_context=True)
def keystore_approval_policy(context: dict[str, Any], keystore: Any) -> dict[str, Any]:
    """The keystore's approval policy, with a link to change it for its admins."""
    request = context["request"]
    policy = services.policy_of(keystore)
    return {
        "keystore": keystore,
        "policy": policy,
        "groups": [(group.value.replace("_", " "), policy.required(group)) for group in ApprovalGroup],
        "is_admin": role_in(request.user, keystore) == Role.ADMIN,
    }
