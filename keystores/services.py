"""Keystore operations: create, edit, delete, test the AWS connection, manage members."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.identity import Actor
from accounts.models import User
from accounts.services import AmbiguousUser, resolve_user
from audit.services import record, record_refusal
from byok_portal import aws, dual_control
from byok_portal.aws import AwsError
from byok_portal.dual_control import ApprovalGroup, Covered
from byok_portal.errors import Conflict, NotFound, PermissionRefused, ServiceError
from byok_portal.vocabulary import KeyState, Operation, Outcome
from keystores.models import ROLE_ARN_RE, Keystore, KeystoreState, Membership, Role
from keystores.selectors import can_create_keystores, require_role

# Every KMS action the portal calls, and nothing else (the permissions policy below is built from these).
KEY_ACTIONS = [
    "kms:DescribeKey",
    "kms:GetParametersForImport",
    "kms:ImportKeyMaterial",
    "kms:DeleteImportedKeyMaterial",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:ListResourceTags",
    # Reconciliation compares an asymmetric key's public key with the portal's (SPEC §9).
    "kms:GetPublicKey",
    # Material versions (SPEC §10): which materials a key holds, and rotating to a new one.
    "kms:ListKeyRotations",
    "kms:RotateKeyOnDemand",
]
ALIAS_ACTIONS = ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"]
# The rotation policy fields are the defaults new keys get (SPEC §10). Like a key's own policy (a key edit),
# they are not an approval group of SPEC §12: they change no material and no access, only future schedules.
# The audit trail redacts every entry whose name says "material": this one holds a number of days.
AUDIT_NAMES = {"material_valid_days": "valid_days"}
EDITABLE_FIELDS = (
    "name",
    "role_arn",
    "auto_reupload",
    "rotation_period_days",
    "rotation_on_limit",
    "material_valid_days",
)


def require_role_audited(
    actor: Actor, keystore: Keystore, role: Role, operation: Operation, details: dict[str, Any] | None = None
) -> None:
    """Check the actor's role; a refusal is audited (with ``details`` of the attempt) before it propagates.

    The one check of every keystore-level service, here and in the apps above (approvals'
    policy, notifications' webhooks). The portal's own jobs (no account) pass.
    """
    if actor.user is None:
        return
    try:
        require_role(actor.user, keystore, role)
    except (NotFound, PermissionRefused) as exc:
        record_refusal(actor=actor, operation=operation, exc=exc, keystore=keystore, details=details)
        raise


def keystore_by_id(keystore_id: Any) -> Keystore:
    """The keystore with this id, whatever its state; NotFound for an unknown or malformed id."""
    try:
        keystore = Keystore.objects.filter(pk=keystore_id).first()
    except ValidationError:
        keystore = None
    if keystore is None:
        raise NotFound("Keystore not found.")
    return keystore


def keystore_create(*, actor: Actor, name: str, aws_account_id: str, region: str, role_arn: str) -> Keystore:
    """Create a keystore; its creator becomes its admin. Needs the global ``keystores.add_keystore``."""
    if actor.user is None or not can_create_keystores(actor.user):
        refused = PermissionRefused("Creating keystores needs the keystore creator permission.")
        record_refusal(actor=actor, operation=Operation.CREATE_KEYSTORE, exc=refused, details={"name": name})
        raise refused
    keystore = Keystore(
        name=(name or "").strip(),
        aws_account_id=aws_account_id,
        region=region,
        role_arn=role_arn,
        created_by=actor.user,
    )
    keystore.full_clean()
    with transaction.atomic():
        keystore.save()
        Membership.objects.create(keystore=keystore, user=actor.user, role=Role.ADMIN)
        record(
            actor=actor,
            operation=Operation.CREATE_KEYSTORE,
            outcome=Outcome.SUCCESS,
            keystore=keystore,
            state_after=keystore.state,
            details={"aws_account_id": aws_account_id, "region": region, "role_arn": role_arn},
        )
    return keystore


def apply_changes(instance: Any, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Set ``values`` on ``instance``; the ones that differ, as the audit trail's ``changed`` entry.

    One shape of "what an edit changed" (``{field: {"from": …, "to": …}}``) for every edit
    the trail records: keystores here, approval policies above.
    """
    diff: dict[str, dict[str, Any]] = {}
    for field, value in values.items():
        before = getattr(instance, field)
        if before != value:
            diff[field] = {"from": before, "to": value}
            setattr(instance, field, value)
    return diff


def keystore_update(*, actor: Actor, keystore_id: Any, **changes: Any) -> Keystore:
    """Edit name, role ARN (same account), auto re-upload or the default rotation policy of new keys.

    Account, region and external id never change. The model's validators judge the values (400 per field).
    """
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({field: "This field cannot be changed." for field in sorted(unknown)})
    keystore = keystore_by_id(keystore_id)
    require_role_audited(actor, keystore, Role.ADMIN, Operation.UPDATE_KEYSTORE)
    with transaction.atomic():
        keystore = Keystore.objects.select_for_update().get(pk=keystore.pk)
        if keystore.state == KeystoreState.DELETED:
            raise Conflict("The keystore is deleted.", state=keystore.state)
        diff = {AUDIT_NAMES.get(field, field): change for field, change in apply_changes(keystore, changes).items()}
        keystore.full_clean()
        keystore.save()
        record(
            actor=actor,
            operation=Operation.UPDATE_KEYSTORE,
            outcome=Outcome.SUCCESS,
            keystore=keystore,
            details={"changed": diff},
        )
    if "role_arn" in diff:
        aws.credential_cache.clear()
    return keystore


def keystore_delete(*, actor: Actor, keystore_id: Any) -> Keystore:
    """Soft-delete a keystore whose keys are all DELETED; it and its audit trail stay readable."""
    keystore = keystore_by_id(keystore_id)
    require_role_audited(actor, keystore, Role.ADMIN, Operation.DELETE_KEYSTORE)
    if keystore.state != KeystoreState.DELETED and not keystore.keys.exclude(state=KeyState.DELETED).exists():
        # Only a deletion that would happen waits for approval; a refusal or a no-op is answered at once.
        dual_control.ask(actor, Covered(ApprovalGroup.DESTROY, Operation.DELETE_KEYSTORE, keystore_id=keystore.pk))
    with transaction.atomic():
        keystore = Keystore.objects.select_for_update().get(pk=keystore.pk)
        before = keystore.state
        if keystore.state == KeystoreState.DELETED:
            record(
                actor=actor,
                operation=Operation.DELETE_KEYSTORE,
                outcome=Outcome.NOOP,
                keystore=keystore,
                state_before=before,
                state_after=before,
            )
            return keystore
        live = keystore.keys.exclude(state=KeyState.DELETED).count()
        if live:
            error = Conflict(
                f"{live} key(s) of this keystore are not DELETED yet; schedule their deletion first.",
                state=keystore.state,
                live_keys=live,
            )
        else:
            keystore.state = KeystoreState.DELETED
            keystore.save(update_fields=["state", "updated_at"])
            record(
                actor=actor,
                operation=Operation.DELETE_KEYSTORE,
                outcome=Outcome.SUCCESS,
                keystore=keystore,
                state_before=before,
                state_after=keystore.state,
            )
            return keystore
    record_refusal(actor=actor, operation=Operation.DELETE_KEYSTORE, exc=error, keystore=keystore, state=before)
    raise error


def keystore_test_connection(*, actor: Actor, keystore_id: Any) -> Keystore:
    """Assume the role and make one harmless KMS call; remember and audit the result (AWS's words verbatim)."""
    keystore = keystore_by_id(keystore_id)
    require_role_audited(actor, keystore, Role.CUSTODIAN, Operation.TEST_CONNECTION)
    error = ""
    request_ids: list[str] = []
    try:
        aws.credential_cache.clear_for(keystore)
        kms = aws.kms_for(keystore, operation=Operation.TEST_CONNECTION, acting=actor)
        request_ids = kms.request_ids
        kms.probe()
        if aws.role_admits_without_external_id(keystore):
            error = (
                f"AssumeRole: ExternalIdNotRequired: the role {keystore.role_arn} can be assumed without the external "
                f"ID {keystore.external_id}, so anyone who knows the role could make the portal act in this account "
                "(the confused deputy). Use the trust policy of the IAM setup guide, which requires it."
            )
    except AwsError as exc:
        error = f"{exc.operation}: {exc.code}: {exc.message}"
        if exc.operation == "AssumeRole" and exc.code == "AccessDenied" and aws.role_refuses_source_identity(keystore):
            error = (
                f"AssumeRole: SourceIdentityNotAllowed: the trust policy of {keystore.role_arn} does not allow "
                "sts:SetSourceIdentity, which the portal needs to name who acts in your CloudTrail. Use the trust "
                "policy of the IAM setup guide."
            )
    with transaction.atomic():
        Keystore.objects.filter(pk=keystore.pk).update(
            last_check_at=timezone.now(), last_check_ok=not error, last_check_error=error
        )
        keystore.refresh_from_db()
        record(
            actor=actor,
            operation=Operation.TEST_CONNECTION,
            outcome=Outcome.FAILED if error else Outcome.SUCCESS,
            keystore=keystore,
            reason=error.split(":", 2)[1].strip() if error else "",
            kms_request_ids=request_ids,
            error=error,
        )
    return keystore


def replica_regions_in_use(keystore: Keystore) -> list[str]:
    """Regions where the keystore's multi-Region keys (not yet deleted) have replicas (SPEC §11)."""
    regions = (
        keystore.keys.exclude(state=KeyState.DELETED)
        .filter(multi_region=True, replicas__region__isnull=False)
        .values_list("replicas__region", flat=True)
        .distinct()
    )
    return sorted(set(regions) - {keystore.region})


def iam_policies(keystore: Keystore, replica_regions: list[str] | None = None) -> dict[str, Any]:
    """The trust and least-privilege permissions policies the customer attaches to the role.

    The key and alias statements cover the keystore's region and ``replica_regions`` (by
    default the regions its multi-Region keys have replicas in); ``kms:ReplicateKey`` is
    allowed on the portal's keys towards those regions only (``kms:ReplicaRegion``).
    """
    match = ROLE_ARN_RE.match(keystore.role_arn)
    partition = keystore.role_arn.split(":", 2)[1] if match else "aws"
    account, region, tag = keystore.aws_account_id, keystore.region, settings.BYOK_TAG_KEY
    replicas = replica_regions_in_use(keystore) if replica_regions is None else sorted(set(replica_regions))
    every_region = [region, *replicas]
    key_arns: str | list[str] = [f"arn:{partition}:kms:{r}:{account}:key/*" for r in every_region]
    alias_arns: str | list[str] = [
        f"arn:{partition}:kms:{r}:{account}:{settings.BYOK_ALIAS_PREFIX}*" for r in every_region
    ]
    if not replicas:  # one region: the policy as it always was
        key_arns, alias_arns = key_arns[0], alias_arns[0]
    portal_tagged = {"StringLike": {f"aws:ResourceTag/{tag}": "*"}}
    trust_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BYOKPortalAssumeRole",
                "Effect": "Allow",
                "Principal": {"AWS": aws.portal_principal_arn()},
                # SetSourceIdentity: each session names who acts through the portal, for CloudTrail (SPEC §14).
                "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"],
                "Condition": {"StringEquals": {"sts:ExternalId": keystore.external_id}},
            }
        ],
    }
    permissions_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CreateOnlyExternalKeysTaggedForThePortal",
                "Effect": "Allow",
                "Action": ["kms:CreateKey", "kms:TagResource"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:KeyOrigin": "EXTERNAL"},
                    "Null": {f"aws:RequestTag/{tag}": "false"},
                },
            },
            # kms:KeyOrigin also matches TagResource on *existing* EXTERNAL keys, so the statement
            # above alone would let the role adopt any customer key by adding the portal's tag, and
            # then manage (and delete) it. This explicit Deny closes that: adding the portal's tag
            # to an existing key that does not carry it is refused, whatever any Allow says
            # (IAM policy evaluation logic: an explicit deny overrides any allow, IAM User Guide,
            # reference_policies_evaluation-logic.html). It names key ARNs only, and CreateKey's
            # tagging is not authorized against a key ARN: CreateKey "can't be controlled by a key
            # policy because [it doesn't] involve any particular KMS key" (KMS Developer Guide,
            # iam-policies.html), and tagging at creation needs "permission in an IAM policy that
            # isn't restricted to particular KMS keys" (tag-permissions.html), i.e. Resource "*",
            # which the Allow above grants. ``aws:ResourceTag`` is evaluated on existing keys only
            # (tag-authorization.html: "resource conditions apply only to operations that use an
            # existing resource"); ``Null: true`` means the key lacks the tag, and
            # ``ForAnyValue:StringEquals`` on ``aws:TagKeys`` means the request adds it
            # (IAM User Guide, reference_policies_condition-single-vs-multi-valued-context-keys.html).
            {
                "Sid": "NeverAdoptAnExistingKey",
                "Effect": "Deny",
                "Action": "kms:TagResource",
                "Resource": key_arns,
                "Condition": {
                    "Null": {f"aws:ResourceTag/{tag}": "true"},
                    "ForAnyValue:StringEquals": {"aws:TagKeys": [tag]},
                },
            },
            {
                "Sid": "ManagePortalKeys",
                "Effect": "Allow",
                "Action": [*KEY_ACTIONS, "kms:TagResource", *ALIAS_ACTIONS],
                "Resource": key_arns,
                "Condition": portal_tagged,
            },
            {
                "Sid": "UntagPortalKeysButNotThePortalTag",
                "Effect": "Allow",
                "Action": "kms:UntagResource",
                "Resource": key_arns,
                "Condition": {**portal_tagged, "ForAllValues:StringNotEquals": {"aws:TagKeys": [tag]}},
            },
            *(
                [
                    {
                        "Sid": "ReplicatePortalKeysToTheirRegions",
                        "Effect": "Allow",
                        "Action": "kms:ReplicateKey",
                        "Resource": f"arn:{partition}:kms:{region}:{account}:key/*",
                        "Condition": {**portal_tagged, "StringEquals": {"kms:ReplicaRegion": replicas}},
                    }
                ]
                if replicas
                else []
            ),
            {
                "Sid": "ManagePortalAliases",
                "Effect": "Allow",
                "Action": ALIAS_ACTIONS,
                "Resource": alias_arns,
            },
            {
                "Sid": "ListForConnectionTestAndRecovery",
                "Effect": "Allow",
                "Action": ["kms:ListAliases", "kms:ListKeys"],
                "Resource": "*",
            },
        ],
    }
    return {"trust_policy": trust_policy, "permissions_policy": permissions_policy}


def membership_set(*, actor: Actor, keystore_id: Any, user: User, role: Role) -> Membership:
    """Give ``user`` ``role`` in the keystore (replacing any role they had)."""
    keystore = keystore_by_id(keystore_id)
    require_role_audited(actor, keystore, Role.ADMIN, Operation.GRANT)
    change = {"user": user.pk, "username": user.get_username(), "role": str(role)}
    dual_control.ask(
        actor, Covered(ApprovalGroup.MEMBERSHIP, Operation.GRANT, keystore_id=keystore.pk, parameters=change)
    )
    with transaction.atomic():
        membership, _created = Membership.objects.update_or_create(
            keystore=keystore, user=user, defaults={"role": role}
        )
        record(
            actor=actor,
            operation=Operation.GRANT,
            outcome=Outcome.SUCCESS,
            keystore=keystore,
            details={"user": user.get_username(), "identity": list(user.identity), "role": str(role)},
        )
    return membership


class UnknownMember(ServiceError):
    """The add-member form names nobody (or several people); only a keystore admin gets this far."""

    status = 400
    code = "unknown_user"


def membership_grant(*, actor: Actor, keystore_id: Any, reference: str, role: Role) -> Membership:
    """Give the person ``reference`` names (a username or a subject) ``role`` in the keystore.

    The caller's admin role is checked *before* the name is looked up, so a member
    without it gets the same refusal whether or not the name exists: the form is not
    a way to learn who has an account. Both the refusal and an admin's lookup of a
    name that matches no active account are audited with the name tried.
    """
    keystore = keystore_by_id(keystore_id)
    reference = (reference or "").strip()[:255]
    attempt = {"user_reference": reference, "role": str(role)}
    require_role_audited(actor, keystore, Role.ADMIN, Operation.GRANT, details=attempt)
    try:
        user = resolve_user(reference, active_only=True)
    except (NotFound, AmbiguousUser) as exc:
        with transaction.atomic():
            record(
                actor=actor,
                operation=Operation.GRANT,
                outcome=Outcome.REFUSED,
                keystore=keystore,
                reason="unknown_user",
                error=exc.detail,
                details=attempt,
            )
        # A 400 about the name (the keystore itself was found): the caller is its admin.
        raise UnknownMember(exc.detail) from exc
    return membership_set(actor=actor, keystore_id=keystore.pk, user=user, role=role)


def membership_remove(*, actor: Actor, keystore_id: Any, user: User) -> None:
    """Remove ``user`` from the keystore. The last admin cannot be removed (someone must be able to manage it)."""
    keystore = keystore_by_id(keystore_id)
    require_role_audited(actor, keystore, Role.ADMIN, Operation.REVOKE)
    if Membership.objects.filter(keystore=keystore, user=user).exists():
        change = {"user": user.pk, "username": user.get_username()}
        dual_control.ask(
            actor, Covered(ApprovalGroup.MEMBERSHIP, Operation.REVOKE, keystore_id=keystore.pk, parameters=change)
        )
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(keystore=keystore, user=user).first()
        if membership is None:
            raise NotFound("That user is not a member of this keystore.")
        admins = Membership.objects.filter(keystore=keystore, role=Role.ADMIN).count()
        if membership.role == Role.ADMIN and admins <= 1:
            raise Conflict("The last admin of a keystore cannot be removed.", state=keystore.state)
        membership.delete()
        record(
            actor=actor,
            operation=Operation.REVOKE,
            outcome=Outcome.SUCCESS,
            keystore=keystore,
            details={"user": user.get_username(), "identity": list(user.identity), "role": membership.role},
        )
