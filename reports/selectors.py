"""The reports' reads (SPEC §15): inventory, rotation compliance and activity, scoped to the reader.

Every report is an iterator of rows over ``QuerySet.iterator()`` (a server-side cursor on
PostgreSQL) or keyset batches, so a report of any size is produced in bounded memory.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, DateTimeField, F, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit import export
from audit.models import AuditEvent
from audit.selectors import events_for
from byok_portal.vocabulary import KeyState, Outcome
from keys.models import Key, KeyMaterial, MaterialState
from keys.selectors import keys_for
from keystores.selectors import Viewer

CHUNK = 1000
# Keys whose material is in use or can be again: what rotation policies are about.
LIVE_STATES = (KeyState.ACTIVE, KeyState.INACTIVE)


@dataclass(frozen=True)
class Column:
    name: str
    title: str
    width: float  # share of the PDF page's width


def material_facts(keys: QuerySet[Key]) -> QuerySet[Key]:
    """Annotate keys with their material facts: ``material_versions``, ``material_since``, ``rotation_policy_days``.

    The one place that knows where a key's material history lives (issue 15's
    ``KeyMaterial``): ``material_versions`` counts the key's versions (a rotation in
    progress not included), ``material_since`` is when the CURRENT version became current
    (its ``rotated_at``, or for version 1 its ``imported_at``; None before any material
    was imported), and ``rotation_policy_days`` is the key's own ``rotation_period_days``
    (None: the key has no rotation policy, and no default is assumed). Subqueries, so
    the report's query count does not grow with the keys.
    """
    versions = (
        KeyMaterial.objects.filter(key_id=OuterRef("pk"))
        .exclude(state=MaterialState.PENDING_ROTATION)
        .order_by()
        .values("key_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    current = KeyMaterial.objects.filter(key_id=OuterRef("pk"), state=MaterialState.CURRENT).annotate(
        since=Coalesce("rotated_at", "imported_at")
    )
    return keys.annotate(
        material_versions=Coalesce(Subquery(versions, output_field=IntegerField()), Value(0)),
        material_since=Subquery(current.values("since")[:1], output_field=DateTimeField()),
        rotation_policy_days=F("rotation_period_days"),
    )


def _last_success(field: str) -> Subquery:
    events = AuditEvent.objects.filter(key_id=OuterRef("pk"), outcome=Outcome.SUCCESS).order_by("-seq")
    return Subquery(events.values(field)[:1])


def _scoped_keys(user: Viewer, keystore_id: uuid.UUID | None) -> QuerySet[Key]:
    keys = keys_for(user)
    return keys.filter(keystore_id=keystore_id) if keystore_id else keys


def age_days(since: dt.datetime | None, now: dt.datetime) -> int | None:
    return (now - since).days if since else None


# --- inventory ---------------------------------------------------------------------------

INVENTORY = (
    Column("keystore", "Keystore", 0.075),
    Column("name", "Name", 0.075),
    Column("alias", "Alias", 0.10),
    Column("key_id", "Key ID", 0.12),
    Column("key_spec", "Spec", 0.115),
    Column("regions", "Regions", 0.055),
    Column("state", "State", 0.085),
    Column("kms_state", "KMS state", 0.07),
    Column("check_value", "Check value", 0.06),
    Column("material_versions", "Versions", 0.045),
    Column("material_age_days", "Age (days)", 0.045),
    Column("expires", "Expires", 0.06),
    Column("last_operation", "Last operation", 0.065),
    Column("last_operation_at", "Last operation at", 0.065),
)


def inventory(
    user: Viewer, *, keystore_id: uuid.UUID | None = None, now: dt.datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Every key the reader may see, DELETED ones included (they are history), by keystore and name."""
    now = now or timezone.now()
    keys = (
        material_facts(_scoped_keys(user, keystore_id))
        .annotate(
            keystore_name=F("keystore__name"),
            keystore_region=F("keystore__region"),
            last_operation=_last_success("operation"),
            last_operation_at=_last_success("time"),
        )
        .order_by("keystore__name", "keystore_id", "name", "id")
        .values(
            "id",
            "name",
            "alias",
            "key_spec",
            "key_usage",
            "state",
            "kms_state",
            "kcv",
            "public_key_sha256",
            "expires",
            "kms_key_arn",
            "keystore_name",
            "keystore_region",
            "material_versions",
            "material_since",
            "last_operation",
            "last_operation_at",
        )
    )
    for row in keys.iterator(chunk_size=CHUNK):
        yield {
            "keystore": row["keystore_name"],
            "name": row["name"],
            "alias": row["alias"],
            "key_id": str(row["id"]),
            "key_spec": row["key_spec"],
            "key_usage": row["key_usage"],
            "regions": row["keystore_region"],
            "state": row["state"],
            "kms_state": row["kms_state"],
            "check_value": row["kcv"] or (f"SHA256:{row['public_key_sha256']}" if row["public_key_sha256"] else ""),
            "material_versions": row["material_versions"],
            "material_age_days": age_days(row["material_since"], now),
            "expires": row["expires"],
            "last_operation": row["last_operation"] or "",
            "last_operation_at": row["last_operation_at"],
            "kms_key_arn": row["kms_key_arn"],
        }


INVENTORY_CSV = (*(column.name for column in INVENTORY), "key_usage", "kms_key_arn")


# --- rotation compliance -------------------------------------------------------------------

ROTATION = (
    Column("keystore", "Keystore", 0.12),
    Column("name", "Name", 0.12),
    Column("alias", "Alias", 0.14),
    Column("key_id", "Key ID", 0.18),
    Column("state", "State", 0.07),
    Column("material_versions", "Versions", 0.05),
    Column("material_since", "Material since", 0.08),
    Column("material_age_days", "Age (days)", 0.06),
    Column("rotation_policy_days", "Policy (days)", 0.06),
    Column("rotation_due", "Due", 0.06),
    Column("status", "Status", 0.06),
)
ROTATION_CSV = tuple(column.name for column in ROTATION)
# Statuses of keys the compliance check does not cover (no policy to check against, no material to age).
NO_POLICY = "NO POLICY"
NO_MATERIAL = "NO MATERIAL"


def rotation_compliance(
    user: Viewer, *, keystore_id: uuid.UUID | None = None, now: dt.datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Live keys with their current material's age against their rotation policy, oldest material first.

    ``status`` is ``OVERDUE`` when the current material is older than the key's
    ``rotation_period_days`` (the check AWS Config cannot make for imported material),
    otherwise ``COMPLIANT``. A key without a rotation policy is not covered by the check:
    it is listed as ``NO POLICY`` (no due date), and one with no imported material yet as
    ``NO MATERIAL``; neither is counted as compliant or overdue.
    """
    now = now or timezone.now()
    keys = (
        material_facts(_scoped_keys(user, keystore_id).filter(state__in=LIVE_STATES))
        .annotate(keystore_name=F("keystore__name"))
        .order_by(F("material_since").asc(nulls_last=True), "id")
        .values(
            "id",
            "name",
            "alias",
            "state",
            "keystore_name",
            "material_versions",
            "material_since",
            "rotation_policy_days",
        )
    )
    for row in keys.iterator(chunk_size=CHUNK):
        since, policy = row["material_since"], row["rotation_policy_days"]
        due = since + dt.timedelta(days=policy) if since is not None and policy is not None else None
        if policy is None:
            status = NO_POLICY
        elif due is None:
            status = NO_MATERIAL
        else:
            status = "OVERDUE" if due < now else "COMPLIANT"
        yield {
            "keystore": row["keystore_name"],
            "name": row["name"],
            "alias": row["alias"],
            "key_id": str(row["id"]),
            "state": row["state"],
            "material_versions": row["material_versions"],
            "material_since": since.date() if since is not None else None,
            "material_age_days": age_days(since, now),
            "rotation_policy_days": policy,
            "rotation_due": due.date() if due is not None else None,
            "status": status,
        }


# --- activity ----------------------------------------------------------------------------------

ACTIVITY = (
    Column("seq", "#", 0.05),
    Column("time", "Time (UTC)", 0.12),
    Column("actor", "Who", 0.10),
    Column("operation", "Operation", 0.10),
    Column("outcome", "Outcome", 0.06),
    Column("reason", "Reason", 0.09),
    Column("keystore", "Keystore", 0.09),
    Column("key", "Key", 0.14),
    Column("states", "State", 0.12),
    Column("approvals", "Approved by", 0.13),
)
ACTIVITY_CSV = (
    "seq",
    "time",
    "actor",
    "actor_iss",
    "actor_sub",
    "operation",
    "outcome",
    "reason",
    "keystore",
    "key",
    "key_id",
    "state_before",
    "state_after",
    "approvals",
    "hash",
)


def approvals_of(details: Mapping[str, Any]) -> str:
    """Who approved an operation (dual-control evidence): ``details.approval.approvers`` (issue 17).

    The audit trail adds ``approval = {"request": id, "approvers": [{"iss", "sub", "name"}]}``
    to the event of an operation run on an approved request; ``execute_approval`` events
    carry the same ``approvers`` list at the top of their details.
    """
    approval = details.get("approval")
    approvers = approval.get("approvers") if isinstance(approval, Mapping) else details.get("approvers")
    if not isinstance(approvers, list):
        return ""
    return ", ".join(
        str(item.get("name") or item.get("sub") or "") if isinstance(item, Mapping) else str(item) for item in approvers
    )


def activity(
    user: Viewer, *, since: dt.datetime, until: dt.datetime, keystore_id: uuid.UUID | None = None, up_to_seq: int
) -> Iterator[dict[str, Any]]:
    """Audit events the reader may see in ``[since, until]`` up to the head the report was built from."""
    events = events_for(user).filter(time__gte=since, time__lte=until, seq__lte=up_to_seq)
    if keystore_id:
        events = events.filter(keystore_id=keystore_id)
    for row in export.rows(events, batch_size=CHUNK):
        yield {
            "seq": row["seq"],
            "time": row["time"].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "actor": row["actor_name"] or row["actor_sub"],
            "actor_iss": row["actor_iss"],
            "actor_sub": row["actor_sub"],
            "operation": row["operation"],
            "outcome": row["outcome"],
            "reason": row["reason"],
            "keystore": row["keystore_name"],
            "key": row["key_alias"] or (str(row["key_id"]) if row["key_id"] else ""),
            "key_id": str(row["key_id"]) if row["key_id"] else "",
            "states": f"{row['state_before']} → {row['state_after']}"
            if row["state_before"] != row["state_after"]
            else row["state_after"],
            "state_before": row["state_before"],
            "state_after": row["state_after"],
            "approvals": approvals_of(row["details"] or {}),
            "hash": row["hash"],
        }


def columns_for(kind: str) -> tuple[Sequence[Column], Sequence[str]]:
    """The PDF's columns and the CSV's columns of a report kind."""
    return {
        "inventory": (INVENTORY, INVENTORY_CSV),
        "rotation-compliance": (ROTATION, ROTATION_CSV),
        "activity": (ACTIVITY, ACTIVITY_CSV),
    }[kind]
