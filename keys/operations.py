"""The registry of key operations: for each, its service function and its input, for every door.

The lifecycle table (:mod:`keys.lifecycle`) says *when* an operation may run; this
registry says *how* it is run: which function in :mod:`keys.services` does it, which
input it takes (the API body's serializer and the page's form, and how their fields
name the service's arguments), and the words a door shows around it. The key page's
buttons and confirmations, the API's actions and their OpenAPI text, the admin's bulk
actions and the lifecycle test matrix are all generated from :data:`REGISTRY`.

Adding an operation: one row in ``LIFECYCLE``, one service function, one entry here
(and its template text, if it has a page of its own).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from django import forms
from django.utils import timezone
from rest_framework import serializers

from accounts.identity import Actor
from byok_portal import dual_control
from byok_portal.dual_control import ApprovalGroup
from byok_portal.errors import Conflict
from byok_portal.vocabulary import Operation
from keys import services
from keys.forms import (
    AddReplicaForm,
    KeyCreateForm,
    KeyFieldsForm,
    PrepareDownloadForm,
    RenewForm,
    ScheduleDeletionForm,
)
from keys.lifecycle import LIFECYCLE, Transition
from keys.models import Key
from keys.serializers import (
    AddReplicaSerializer,
    KeyCreateSerializer,
    KeyUpdateSerializer,
    PreparedKeySerializer,
    PrepareDownloadSerializer,
    RenewSerializer,
    ScheduleDeletionSerializer,
)
from keys.services import Done, WrappedDownload

# What a door hands in: the validated fields of the operation's body or form.
Input = Mapping[str, Any]

# How many times a covered operation asks the gate when the key keeps changing state under it
# (each change is another operation finishing on the same key; three in a row is already rare).
GATE_ROUNDS = 3


@dataclass(frozen=True)
class KeyOperation:
    """How one operation is run: its service function, its input, and what the doors say about it."""

    operation: Operation
    service: Callable[..., Done | WrappedDownload]
    summary: str  # the OpenAPI summary; pages use the lifecycle row's label
    # The service's argument naming the object acted on: a key, or (create) its keystore.
    target: Literal["key_id", "keystore_id"] = "key_id"
    # Input field (body and form alike) -> the service's keyword argument. Fields not given are not passed.
    arguments: Mapping[str, str] = field(default_factory=dict)
    body: type[serializers.Serializer[Any]] | None = None  # the API's input shape; None: no body
    form: type[forms.Form] | None = None  # the same input on a page
    # The page form's initial values, when they depend on the key (e.g. the renewal's defaults).
    form_initial: Callable[[Key], dict[str, Any]] | None = None
    # Judge the body only after the caller's role is checked (and a refusal audited), so an outsider
    # learns nothing from how a body is answered; the service checks this input itself, after the role.
    role_before_input: bool = False
    # A button on the key page (with its confirmation), a POST action of the API and an admin bulk action.
    button: bool = False
    # ``POST /keys/{id}/<slug>/`` in the API (buttons and the download pair).
    api_action: bool = False
    danger: bool = False
    done: str = ""  # what a page says on success; {name} is the key's name
    created: bool = False  # the API answers 201 (a new key)
    # The API's answer, if not the key as ``KeySerializer`` writes it (given the key the service returns).
    answer: type[serializers.Serializer[Any]] | None = None
    # The API's 403 beyond a role too weak: who else is refused, and why (OpenAPI text).
    forbidden: str = ""
    # An admin bulk action too (buttons only): not for an operation whose input has no default (add_replica's region).
    bulk: bool = True
    # Dual control (SPEC §12): the keystore's approval policy for this group decides whether it runs at once
    # or waits for approvals. None: never waits.
    approval_group: ApprovalGroup | None = None

    @property
    def slug(self) -> str:
        return self.operation.value.replace("_", "-")

    @property
    def row(self) -> Transition:
        return LIFECYCLE[self.operation]

    def page_form(self, key: Key, data: Any = None) -> forms.Form | None:
        """The page's form for acting on ``key`` (bound to ``data`` if given); None: the operation takes no input."""
        if self.form is None:
            return None
        if self.form_initial is None:
            return self.form(data)
        return self.form(data, initial=self.form_initial(key))

    def kwargs(self, data: Input | None) -> dict[str, Any]:
        given = data or {}
        return {argument: given[name] for name, argument in self.arguments.items() if name in given}

    def parameters(self, data: Input | None) -> dict[str, Any]:
        """The input an approval request keeps: the given fields this operation takes, by their input names."""
        given = data or {}
        return {name: given[name] for name in self.arguments if name in given}

    def _call(self, actor: Actor, target: uuid.UUID, data: Input | None) -> Done | WrappedDownload:
        arguments: dict[str, Any] = {self.target: target, **self.kwargs(data)}
        if self.approval_group is None:
            return self.service(actor=actor, **arguments)
        # The one place every door (pages, API, admin actions, bulk jobs) passes: the approval gate.
        attempt = dual_control.Covered(
            self.approval_group, self.operation.value, key_id=target, parameters=self.parameters(data)
        )
        for _ in range(GATE_ROUNDS):
            try:
                with dual_control.judged(attempt, dual_control.ask(actor, attempt)):
                    return self.service(actor=actor, **arguments)
            except dual_control.StateChanged:
                continue  # the key moved between the gate and the row lock: the gate judges its new state
        raise Conflict(
            "The key's state kept changing while this operation waited for it; nothing was done: try again.",
            reason="state_changed",
        )

    def run(self, actor: Actor, target: uuid.UUID, data: Input | None = None) -> Done:
        """Run the operation with the door's validated input; what happened comes back."""
        result = self._call(actor, target, data)
        if not isinstance(result, Done):
            raise TypeError(f"{self.operation} releases material: use release()")
        return result

    def release(self, actor: Actor, target: uuid.UUID) -> WrappedDownload:
        """Run the download: the material wrapped for the prepared public key."""
        result = self._call(actor, target, None)
        if not isinstance(result, WrappedDownload):
            raise TypeError(f"{self.operation} releases nothing: use run()")
        return result


_FIELDS = {"name": "name", "alias": "alias", "tags": "tags", "expires": "expires"}


def _renewal_initial(key: Key) -> dict[str, Any]:
    """The renewal form prefilled with what the API would choose by default."""
    defaults = services.renewal_defaults(key, timezone.localdate())
    return {"name": defaults.name, "expires": defaults.expires}


REGISTRY: dict[Operation, KeyOperation] = {
    entry.operation: entry
    for entry in (
        KeyOperation(
            Operation.CREATE,
            services.key_create,
            "Create a key (custodian)",
            target="keystore_id",
            arguments={
                **_FIELDS,
                "key_spec": "key_spec",
                "key_usage": "key_usage",
                "multi_region": "multi_region",
                "replica_regions": "replica_regions",
                "rotation_period_days": "rotation_period_days",
                "material_valid_days": "material_valid_days",
            },
            body=KeyCreateSerializer,
            form=KeyCreateForm,
            created=True,
        ),
        KeyOperation(
            Operation.UPDATE,
            services.key_update,
            "Edit a key (custodian)",
            arguments={
                **_FIELDS,
                "rotation_period_days": "rotation_period_days",
                "rotation_on_limit": "rotation_on_limit",
                "material_valid_days": "material_valid_days",
            },
            body=KeyUpdateSerializer,
            form=KeyFieldsForm,
            role_before_input=True,
        ),
        KeyOperation(
            Operation.DEACTIVATE,
            services.key_deactivate,
            "Deactivate a key",
            button=True,
            api_action=True,
            danger=True,
            done="Key “{name}” deactivated: the KMS key is disabled and its key material deleted from AWS.",
            approval_group=ApprovalGroup.DISABLE,
        ),
        KeyOperation(
            Operation.ACTIVATE,
            services.key_activate,
            "Activate a key",
            button=True,
            api_action=True,
            done="Key “{name}” activated: its material is imported again and the KMS key is enabled.",
        ),
        KeyOperation(
            Operation.UPLOAD,
            services.key_upload,
            "Re-upload the key material to KMS",
            button=True,
            api_action=True,
            done="Key material of “{name}” re-uploaded: the KMS key holds it and is enabled.",
        ),
        KeyOperation(
            Operation.ADD_REPLICA,
            services.key_add_replica,
            "Add a replica region to a multi-Region key",
            arguments={"region": "region"},
            body=AddReplicaSerializer,
            form=AddReplicaForm,
            role_before_input=True,
            button=True,
            api_action=True,
            bulk=False,
            done="“{name}” has a new replica: the same key material is now in that region too.",
            approval_group=ApprovalGroup.CHANGE_MATERIAL,
        ),
        KeyOperation(
            Operation.RENEW,
            services.key_renew,
            "Renew a key (returns the new key)",
            arguments={"name": "name", "expires": "expires"},
            body=RenewSerializer,
            form=RenewForm,
            form_initial=_renewal_initial,
            role_before_input=True,
            button=True,
            api_action=True,
            created=True,
            done="Key renewed: this is the new key, “{name}”; the old one is REPLACED and still decrypts.",
            approval_group=ApprovalGroup.CHANGE_MATERIAL,
        ),
        KeyOperation(
            Operation.ROTATE,
            services.key_rotate,
            "Rotate a symmetric key's material in place (same KMS key; 409 rotation_limit after 25)",
            button=True,
            api_action=True,
            done="Key material of “{name}” rotated: new ciphertexts use the new version; older ones still decrypt.",
            approval_group=ApprovalGroup.CHANGE_MATERIAL,
        ),
        # The hourly re-import task's operation on one key (keys.jobs.reimport); no door offers it.
        KeyOperation(
            Operation.REIMPORT,
            services.key_reimport,
            "Re-import a key's material with a new expiry (ValidTo) before AWS deletes it",
        ),
        KeyOperation(
            Operation.SCHEDULE_DELETION,
            services.key_schedule_deletion,
            "Schedule a key's deletion",
            arguments={"pending_window_days": "pending_window_days"},
            body=ScheduleDeletionSerializer,
            form=ScheduleDeletionForm,
            button=True,
            api_action=True,
            danger=True,
            done="Deletion of “{name}” scheduled. KMS no longer uses the key; you can cancel until the date shown.",
            approval_group=ApprovalGroup.DESTROY,
        ),
        KeyOperation(
            Operation.CANCEL_DELETION,
            services.key_cancel_deletion,
            "Cancel a key's scheduled deletion",
            button=True,
            api_action=True,
            done="Deletion of “{name}” cancelled. The key is INACTIVE: activate it to use it again.",
        ),
        # A repair: the key page offers it (first) only while its lifecycle row's KMS state holds (MISSING).
        KeyOperation(
            Operation.RECREATE,
            services.key_recreate,
            "Recreate a vanished KMS key with the key's own material",
            button=True,
            api_action=True,
            done="“{name}” recreated in KMS with its own material: its new KMS key ARN is shown below.",
        ),
        KeyOperation(
            Operation.PREPARE_DOWNLOAD,
            services.key_prepare_download,
            "Prepare a download (first person)",
            arguments={"public_key": "public_key_pem"},
            body=PrepareDownloadSerializer,
            form=PrepareDownloadForm,
            role_before_input=True,
            api_action=True,
            answer=PreparedKeySerializer,
            approval_group=ApprovalGroup.EXPORT,
        ),
        KeyOperation(
            Operation.DOWNLOAD,
            services.key_download,
            "Download the wrapped material (second person)",
            api_action=True,
            forbidden="`permission_denied` (role too weak) or `two_person_rule`: "
            "the person who prepared the download cannot download it.",
        ),
        # Offered only beside a pending preparation (its lifecycle row is not a state's button), to those
        # ``services.may_withdraw_download`` lets withdraw it; the service enforces the same rule.
        KeyOperation(
            Operation.WITHDRAW_DOWNLOAD,
            services.key_withdraw_download,
            "Withdraw a prepared download (its preparer or a keystore admin)",
            button=True,
            api_action=True,
            danger=True,
            done="The prepared download of “{name}” is withdrawn: nobody can download it.",
            forbidden="`permission_denied`: only the person who prepared the download, or a keystore admin, "
            "may withdraw it.",
        ),
        # The daily job's operation on one key; the batched job (keys.jobs.cleanup) does the same to many.
        KeyOperation(
            Operation.CLEANUP,
            services.key_cleanup,
            "Clean up a key",
            arguments={"now": "now"},
        ),
    )
}

BUTTONS: dict[str, KeyOperation] = {entry.slug: entry for entry in REGISTRY.values() if entry.button}
API_ACTIONS: tuple[KeyOperation, ...] = tuple(entry for entry in REGISTRY.values() if entry.api_action)
