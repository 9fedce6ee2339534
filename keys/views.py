"""Key pages: the dashboard, list, create, edit, detail with the lifecycle actions, and the two-person download.

The buttons on the key page, their confirmations and the refusals come from the
lifecycle table (:data:`keys.lifecycle.LIFECYCLE`) and the registry of operations
(:data:`keys.operations.REGISTRY`); every change is one registry entry's service
call, whose result says whether anything changed. Reads go through
:mod:`keys.selectors`. Key material is never rendered: a download is always a file
attachment.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.identity import actor_from_request
from accounts.models import User
from byok_portal.aws import AwsError
from byok_portal.dual_control import ApprovalPending
from byok_portal.errors import NotFound, PermissionRefused, ServiceError
from byok_portal.vocabulary import KeyState, KmsState, Operation
from byok_portal.web import (
    apply_validation_error,
    fetch_or_404,
    forbidden,
    paginate,
    portal_login_required,
    query_without_page,
    report_error,
    service_errors_to_form,
)
from keys import custody, selectors, services
from keys.filters import KeyFilter
from keys.forms import AttentionForm, KeyCreateForm, KeyFieldsForm, PrepareDownloadForm, adapt_key_filter_form
from keys.lifecycle import (
    LIFECYCLE,
    allowed_operations,
    expected_kms_state,
    expiring_q,
    expiry_horizon,
    is_expiring,
    is_rotation_overdue,
    needs_attention_q,
    repairs_for,
    rotation_due_soon_q,
    rotation_overdue_q,
)
from keys.materials import PERMANENT as MATERIAL_HELD
from keys.models import Key, KeyMaterial
from keys.operations import BUTTONS, REGISTRY, KeyOperation
from keys.serializers import DownloadSerializer
from keys.unwrapping import unwrap_commands
from keystores.models import ROLE_RANK, KeystoreState, Role
from keystores.selectors import can_create_keystores, keystores_for, role_in, with_key_counts

AUDIT_EXCERPT = 10
# Each dashboard panel lists at most this many rows and links to the full, filtered list.
PANEL_ROWS = 8


def _is_custodian(user: User | AnonymousUser, key: Key) -> bool:
    role = role_in(user, key.keystore)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[Role.CUSTODIAN]


def _key_to_act_on(request: HttpRequest, key_id: uuid.UUID, operation: Operation, refusal: str) -> Key | HttpResponse:
    """The key a page about ``operation`` works on, or the answer that refuses it.

    A GET only shows a form or a confirmation, so seeing the key is enough to be
    told no. A POST is an attempt: the service layer decides and audits a refusal,
    for outsiders (404, as for a key that does not exist) and auditors (403) alike.
    """
    if request.method == "POST":
        try:
            return services.authorize(actor=actor_from_request(request), key_id=key_id, operation=operation)
        except NotFound as exc:
            raise Http404(exc.detail) from exc
        except PermissionRefused as exc:
            return forbidden(request, exc)
    key = fetch_or_404(lambda: selectors.get_key_for(request.user, key_id))
    if not _is_custodian(request.user, key):
        return forbidden(request, PermissionRefused(refusal))
    return key


def _detail(key: Key | uuid.UUID) -> HttpResponse:
    return redirect("keys:detail", key_id=key.pk if isinstance(key, Key) else key)


# --- dashboard and list ---------------------------------------------------------------


@portal_login_required
@require_http_methods(["GET"])
def dashboard(request: HttpRequest) -> HttpResponse:
    """Keystores, keys by state, keys expiring soon, keys whose KMS state has drifted, keys due (or overdue) for
    rotation and keys whose material expires in KMS soon. A constant number of queries, however many keys."""
    by_state = selectors.keys_by_state(request.user)
    keystores = with_key_counts(keystores_for(request.user).filter(state=KeystoreState.ACTIVE)).order_by("name", "id")
    # One row more than shown tells whether a "see all" link is needed, without a COUNT.
    keystore_rows = list(keystores[: PANEL_ROWS + 1])
    today, now = timezone.localdate(), timezone.now()
    expiring_rows, attention_rows, rotation_rows, material_rows = (
        list(qs[: PANEL_ROWS + 1])
        for qs in (
            selectors.expiring_keys(request.user),
            selectors.keys_needing_attention(request.user),
            selectors.keys_due_for_rotation(request.user, today),
            selectors.keys_with_material_expiring(request.user, now),
        )
    )
    context = {
        "keystores": keystore_rows[:PANEL_ROWS],
        "more_keystores": len(keystore_rows) > PANEL_ROWS,
        "states": [(state, by_state.get(state.value, 0)) for state in KeyState],
        "total_keys": sum(n for state, n in by_state.items() if state != KeyState.DELETED),
        "expiring": expiring_rows[:PANEL_ROWS],
        "more_expiring": len(expiring_rows) > PANEL_ROWS,
        "attention": attention_rows[:PANEL_ROWS],
        "more_attention": len(attention_rows) > PANEL_ROWS,
        # Keys of a keystore the portal cannot reach were not checked: never call them "in step".
        "unreachable": [keystore for keystore in keystore_rows if keystore.last_check_ok is False],
        "warning_days": settings.BYOK_EXPIRY_WARNING_DAYS,
        "warn_before": expiry_horizon(today),
        # The rotation policy and material expiry (SPEC §10): overdue or due soon, and material AWS would delete.
        "rotation": selectors.rotation_counts(request.user, today, now),
        "rotation_due": [
            (key, is_rotation_overdue(key.state, key.next_rotation_date, today)) for key in rotation_rows[:PANEL_ROWS]
        ],
        "more_rotation_due": len(rotation_rows) > PANEL_ROWS,
        "material_expiring": material_rows[:PANEL_ROWS],
        "more_material_expiring": len(material_rows) > PANEL_ROWS,
        "margin_days": settings.BYOK_REIMPORT_MARGIN_DAYS,
        "now": now,
        "can_create_keystores": can_create_keystores(request.user),
    }
    return render(request, "dashboard.html", context)


def apply_attention(queryset: QuerySet[Key], attention: str) -> QuerySet[Key]:
    """The page-only "needs attention" filter: expiring soon, drift / KMS mismatch, rotation due, material expiring."""
    if attention == "expiring":
        return queryset.filter(expiring_q(timezone.localdate())).order_by("expires", "id")
    if attention == "drift":
        return queryset.filter(needs_attention_q())
    if attention == "rotation":
        today = timezone.localdate()
        return queryset.filter(rotation_overdue_q(today) | rotation_due_soon_q(today)).order_by(
            "next_rotation_date", "id"
        )
    if attention == "material":
        return queryset.filter(selectors.with_expiring_material(timezone.now()))
    return queryset


@portal_login_required
@never_cache
@require_http_methods(["GET"])
def key_list(request: HttpRequest) -> HttpResponse:
    """Keys the user can see: search, filters, state badges, expiring-soon marks, pagination.

    Filtering is the shared :class:`keys.filters.KeyFilter` (the same as ``GET /api/v1/keys/``);
    DELETED keys only show when that state is asked for.
    """
    keystores = list(keystores_for(request.user).order_by("name", "id"))
    scoped = selectors.keys_for(request.user).select_related("keystore").order_by("-created_at", "id")
    filterset = KeyFilter(request.GET, queryset=scoped)
    adapt_key_filter_form(filterset.form, keystores)
    attention = AttentionForm(request.GET)
    queryset = filterset.qs if filterset.is_valid() else scoped.none()
    if not request.GET.get("state"):
        queryset = queryset.exclude(state=KeyState.DELETED)
    if attention.is_valid():
        queryset = apply_attention(queryset, attention.cleaned_data["attention"])
    context = {
        "filter": filterset,
        "attention": attention,
        "page": paginate(request, queryset),
        "query": query_without_page(request),
        "warn_before": expiry_horizon(timezone.localdate()),
        "filtered": any(request.GET.get(name) for name in (*filterset.form.fields, "attention")),
    }
    return render(request, "keys/list.html", context)


# --- create and edit -----------------------------------------------------------------


@portal_login_required
@require_http_methods(["GET", "POST"])
def key_create(request: HttpRequest) -> HttpResponse:
    """A new key: the portal generates the material and imports it into a new KMS key."""
    keystores = keystores_for(request.user, min_role=Role.CUSTODIAN).filter(state=KeystoreState.ACTIVE)
    initial = {"keystore": request.GET.get("keystore")} if request.GET.get("keystore") else {}
    form = KeyCreateForm(request.POST or None, keystores=keystores.order_by("name", "id"), initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        with service_errors_to_form(form, request, doing="Creating the key"):
            key = REGISTRY[Operation.CREATE].run(actor_from_request(request), data["keystore"].pk, data).key
        if not form.errors:
            messages.success(
                request,
                f"Key “{key.name}” ({key.key_spec}, {key.key_usage}) created: the KMS key holds the portal's "
                f"material and is enabled ({_check_value_text(key)}).",
            )
            return _detail(key)
    context = {"form": form, "has_keystores": keystores.exists()}
    return render(request, "keys/create.html", context, status=400 if form.errors else 200)


@portal_login_required
@require_http_methods(["GET", "POST"])
def key_edit(request: HttpRequest, key_id: uuid.UUID) -> HttpResponse:
    """Change name, alias, tags and expiry (tags and alias are applied to the KMS key)."""
    key = _key_to_act_on(request, key_id, Operation.UPDATE, "Editing keys needs the custodian role in this keystore.")
    if isinstance(key, HttpResponse):
        return key
    row = LIFECYCLE[Operation.UPDATE]
    if KeyState(key.state) not in row.allowed:
        messages.error(
            request,
            f"Editing refused. A {key.get_state_display().lower()} key cannot be edited; "
            f"allowed in: {', '.join(sorted(row.allowed))}.",
            extra_tags="refused",
        )
        return _detail(key)
    initial = {
        "name": key.name,
        "alias": key.alias,
        "tags": key.tags,
        "expires": key.expires,
        "rotation_period_days": key.rotation_period_days,
        "rotation_on_limit": key.rotation_on_limit,
        "material_valid_days": key.material_valid_days,
    }
    form = KeyFieldsForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        changes = {name: value for name, value in form.cleaned_data.items() if initial[name] != value}
        if not changes:
            messages.info(request, f"Nothing to change — key “{key.name}” is as it was.")
            return _detail(key)
        with service_errors_to_form(form, request, doing="Saving the key"):
            key = REGISTRY[Operation.UPDATE].run(actor_from_request(request), key.pk, changes).key
        if not form.errors:
            messages.success(request, f"Key “{key.name}” saved ({', '.join(sorted(changes))} changed).")
            return _detail(key)
    context = {"form": form, "key": key, "consequence": row.consequence}
    return render(request, "keys/edit.html", context, status=400 if form.errors else 200)


# --- lifecycle actions -----------------------------------------------------------------


def offered_actions(key: Key) -> list[KeyOperation]:
    """The buttons of the key page: the repairs the key needs first, then what its state allows, in table order."""
    by_operation = {entry.operation: entry for entry in BUTTONS.values()}
    operations = [
        *repairs_for(key.state, key.kms_state, key.key_spec),
        *allowed_operations(key.state, key.key_spec, multi_region=key.multi_region),
    ]
    return [by_operation[op] for op in operations if op in by_operation]


def _render_confirm(
    request: HttpRequest, key: Key, action: KeyOperation, form: forms.Form | None, status: int = 200
) -> HttpResponse:
    allowed = KeyState(key.state) in action.row.allowed
    context = {"key": key, "action": action, "form": form, "allowed": allowed}
    return render(request, "keys/confirm.html", context, status=status)


@portal_login_required
@never_cache
@require_http_methods(["GET", "POST"])
def key_action(request: HttpRequest, key_id: uuid.UUID, action: str) -> HttpResponse:
    """GET: the confirmation page (the no-JS fallback of the dialog). POST: run the operation."""
    chosen = BUTTONS.get(action)
    if chosen is None:
        raise Http404("No such action.")
    key = _key_to_act_on(request, key_id, chosen.operation, "Key operations need the custodian role in this keystore.")
    if isinstance(key, HttpResponse):
        return key
    form = chosen.page_form(key, request.POST or None)
    if request.method == "GET":
        return _render_confirm(request, key, chosen, form)
    if form is not None and not form.is_valid():
        return _render_confirm(request, key, chosen, form, status=400)
    actor = actor_from_request(request)
    label = chosen.row.label
    try:
        done = chosen.run(actor, key.pk, form.cleaned_data if form is not None else None)
    except ValidationError as exc:
        if form is None:
            report_error(request, exc, doing=label)
            return _detail(key)
        apply_validation_error(form, exc)
        return _render_confirm(request, key, chosen, form, status=400)
    except (ServiceError, AwsError) as exc:
        report_error(request, exc, doing=label)
        return _detail(key)
    if not done.changed:
        messages.info(
            request,
            f"Key “{done.key.name}” is already {done.key.get_state_display().lower()} — nothing changed.",
            extra_tags="noop",
        )
    else:
        messages.success(request, chosen.done.format(name=done.key.name))
    return _detail(done.key)


# --- detail ----------------------------------------------------------------------------


def _check_value_text(key: Key) -> str:
    """How a page names a key's check value: its KCV, or (RSA, EC) the SHA-256 of its public key."""
    if key.kcv:
        return f"KCV {key.kcv}"
    return f"public key SHA-256 {key.public_key_sha256[:16]}…"


def _preparer(key: Key) -> str:
    """Who prepared the pending download, by name where the portal knows them."""
    iss, sub = key.download_prepared_by_iss, key.download_prepared_by_sub
    user = User.objects.filter(oidc_issuer=iss, oidc_subject=sub).first()
    return user.display_name if user is not None else f"{sub} ({iss})"


def _download_context(request: HttpRequest, key: Key) -> dict[str, Any]:
    """What the pages say about a prepared download: by whom, until when, and whether it is the viewer's own."""
    if not key.download_prepared or key.download_prepared_at is None:
        return {"prepared": False}
    actor = actor_from_request(request)
    expires_at = key.download_prepared_at + dt.timedelta(seconds=settings.BYOK_DOWNLOAD_PREPARE_TTL_SECONDS)
    return {
        "prepared": True,
        "prepared_by": _preparer(key),
        "prepared_by_me": (key.download_prepared_by_iss, key.download_prepared_by_sub) == actor.identity,
        "prepared_at": key.download_prepared_at,
        "expires_at": expires_at,
        "expired": services.download_preparation_expired(key),
        "fingerprint": custody.public_key_fingerprint(key.download_public_key),
        "can_withdraw": services.may_withdraw_download(actor, key),
    }


def _unwrap_context(key: Key) -> dict[str, str]:
    """How a download of this key is wrapped and the commands that unwrap it (keys.unwrapping, as in the README)."""
    algorithm = custody.download_wrapping_algorithm(key.key_spec)
    return {
        "wrapping_algorithm": algorithm,
        "unwrap_commands": unwrap_commands(key.key_spec, file=f"byok-{key.pk}-wrapped.json", algorithm=algorithm),
    }


@portal_login_required
@never_cache
@require_http_methods(["GET"])
def key_detail(request: HttpRequest, key_id: uuid.UUID) -> HttpResponse:
    """Everything about one key, and only the actions its state allows, each with its consequence."""
    key = fetch_or_404(lambda: selectors.get_key_for(request.user, key_id))
    can_act = _is_custodian(request.user, key)
    offered = set(allowed_operations(key.state, key.key_spec))
    actions = [{"action": action, "form": action.page_form(key)} for action in offered_actions(key)]
    expected = expected_kms_state(key.state)
    replaces, replaced_by = selectors.renewal_neighbours(key)
    today = timezone.localdate()
    versions = list(KeyMaterial.objects.filter(key=key).order_by("version"))
    expiries = [v.valid_to for v in versions if v.valid_to is not None and v.state in MATERIAL_HELD]
    context = {
        "key": key,
        "can_act": can_act,
        "actions": actions if can_act else [],
        "can_edit": can_act and Operation.UPDATE in offered,
        "can_prepare": can_act and Operation.PREPARE_DOWNLOAD in offered,
        "can_download": can_act and Operation.DOWNLOAD in offered,
        "download": _download_context(request, key),
        # Offered beside the pending preparation, not among the state's buttons (see _download_context).
        "withdraw": REGISTRY[Operation.WITHDRAW_DOWNLOAD],
        "replaced_by": replaced_by,
        "replaces": replaces,
        "kms_mismatch": expected is not None and key.kms_state != expected,
        "expected_kms_state": KmsState(expected).label if expected else "",
        "expiring": is_expiring(key.state, key.expires, today),
        "expired": key.expires is not None and key.expires < today,
        "events": selectors.recent_events(key, AUDIT_EXCERPT),
        # A multi-Region key's replicas, each with its state and whether it is out of step (SPEC §11).
        "replicas": list(key.replicas.all()) if key.multi_region else [],
        # Every material version (never material): SPEC §10's versions table.
        "versions": versions,
        # The earliest ValidTo among the materials KMS holds: when the key would stop working without a re-import.
        "material_valid_to": min(expiries) if expiries else None,
        "rotation_overdue": is_rotation_overdue(key.state, key.next_rotation_date, today),
        "audit_url": f"{reverse('audit:event-list')}?key={key.pk}",
        "audit_url_replaces": f"{reverse('audit:event-list')}?key={key.replaces_id}",
        **_unwrap_context(key),
    }
    return render(request, "keys/detail.html", context)


# --- the two-person download -------------------------------------------------------------


@portal_login_required
@never_cache
@require_http_methods(["GET", "POST"])
def key_prepare_download(request: HttpRequest, key_id: uuid.UUID) -> HttpResponse:
    """First person: register the RSA public key the material will be wrapped with."""
    key = _key_to_act_on(
        request, key_id, Operation.PREPARE_DOWNLOAD, "Downloads need the custodian role in this keystore."
    )
    if isinstance(key, HttpResponse):
        return key
    form = PrepareDownloadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        with service_errors_to_form(form, request, doing="Preparing the download"):
            try:
                key = (
                    REGISTRY[Operation.PREPARE_DOWNLOAD].run(actor_from_request(request), key.pk, form.cleaned_data).key
                )
            except ApprovalPending as exc:  # the key page shows the request waiting for approvals
                report_error(request, exc, doing="Preparing the download")
                return _detail(key)
        if not form.errors:
            hours = settings.BYOK_DOWNLOAD_PREPARE_TTL_SECONDS // 3600
            fingerprint = custody.public_key_fingerprint(key.download_public_key)
            messages.success(
                request,
                f"Download prepared for the public key {fingerprint}. Another custodian — not you — can now "
                f"download the wrapped key, once, within {hours} hours: send them this page's link.",
            )
            return _detail(key)
    context = {"form": form, "key": key, "download": _download_context(request, key)}
    return render(request, "keys/prepare_download.html", context, status=400 if form.errors else 200)


@portal_login_required
@never_cache
@require_http_methods(["GET", "POST"])
def key_download(request: HttpRequest, key_id: uuid.UUID) -> HttpResponse:
    """Second person: GET explains, POST returns the wrapped material as a JSON file (never as a page)."""
    key = _key_to_act_on(request, key_id, Operation.DOWNLOAD, "Downloads need the custodian role in this keystore.")
    if isinstance(key, HttpResponse):
        return key
    if request.method == "GET":
        context = {
            "key": key,
            "download": _download_context(request, key),
            "consequence": LIFECYCLE[Operation.DOWNLOAD].consequence,
            **_unwrap_context(key),
        }
        return render(request, "keys/download.html", context)
    try:
        wrapped = REGISTRY[Operation.DOWNLOAD].release(actor_from_request(request), key.pk)
    except (ServiceError, AwsError) as exc:
        report_error(request, exc, doing="Download")
        return _detail(key)
    # Shown on the next page (the key page, without JS): the file alone leaves no trace on screen.
    messages.success(
        request,
        f"Downloaded byok-{wrapped.key_id}-wrapped.json. The preparation is used up. "
        "“Unwrap a downloaded file” on the key page shows the OpenSSL commands.",
        extra_tags="downloaded",
    )
    document = DownloadSerializer().to_representation(wrapped)  # the same document as the API's
    response = HttpResponse(json.dumps(document, indent=2) + "\n", content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="byok-{wrapped.key_id}-wrapped.json"'
    return response
