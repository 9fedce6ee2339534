"""Phones and narrow windows (issue 13 item 5): every column reachable, a compact header, nothing cut off."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from tests.e2e.conftest import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
# One line of header: the brand and the "Menu" button (3.5rem), not the ~190 px of a wrapped menu.
MAX_HEADER_HEIGHT = 64


@pytest.fixture
def keys(people: Any, keystore: Any) -> list[Any]:
    from keys import services

    return [
        services.key_create(
            actor=people.actor(people.bob),
            keystore_id=keystore.pk,
            name=f"Customer records {n}",
            alias=f"alias/customer-records-with-a-long-name-{n}",
            tags={"app": "crm"},
            expires=timezone.localdate() + dt.timedelta(days=10 + n),
        ).key
        for n in range(2)
    ]


def _fits_in_viewport(page: Any, locator: Any) -> bool:
    box = locator.bounding_box()
    width = page.viewport_size["width"]
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5


def test_every_column_of_the_key_list_is_reachable_on_a_phone(
    live_server: Any, new_context: Any, keys: list[Any]
) -> None:
    page = new_context(viewport=PHONE).new_page()
    log_in(page, live_server.url, "bob", "bob-password-123")
    page.goto(f"{live_server.url}/keys/")
    # The page itself does not scroll sideways; the table does, inside a labelled region...
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    region = page.get_by_role("region", name="Keys")
    headers = region.get_by_role("columnheader")
    names = [h.strip() for h in headers.all_inner_texts()]
    assert [n.lower() for n in names] == [
        "select",  # the bulk action's checkbox column (visually hidden header)
        "name / alias",
        "keystore",
        "spec / usage",
        "state",
        "kms",
        "expires",
        "check value",
        "created",
    ]
    assert not _fits_in_viewport(page, headers.last), "the table is wider than a phone: this test would prove nothing"
    # ...that a keyboard reaches and scrolls: focus it, press End / arrow keys, and the last column comes into view.
    region.focus()
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Keys, table"
    for _ in range(20):
        page.keyboard.press("ArrowRight")
    # Arrow keys scroll smoothly: wait until the region has reached its right end.
    page.wait_for_function("el => el.scrollLeft + el.clientWidth >= el.scrollWidth - 1", arg=region.element_handle())
    assert _fits_in_viewport(page, headers.last)
    assert _fits_in_viewport(page, region.get_by_role("cell", name=keys[0].kcv).first)
    screenshot(page, "11-key-list-390px")


def test_the_header_is_one_line_with_a_menu_on_a_phone(live_server: Any, new_context: Any, people: Any) -> None:
    page = new_context(viewport=PHONE).new_page()
    log_in(page, live_server.url, "bob", "bob-password-123")
    header = page.locator("header.site-header")
    assert header.bounding_box()["height"] <= MAX_HEADER_HEIGHT
    nav = page.get_by_role("navigation", name="Main")
    assert not nav.is_visible()
    menu = page.get_by_role("button", name="Menu")
    assert menu.get_attribute("aria-expanded") == "false"
    menu.click()
    assert menu.get_attribute("aria-expanded") == "true"
    screenshot(page, "12-menu-open-390px")
    for name in ("Dashboard", "Keystores", "Keys", "Audit", "API docs"):
        assert nav.get_by_role("link", name=name, exact=True).is_visible()
    assert page.get_by_role("button", name="Log out").is_visible()
    page.keyboard.press("Escape")
    assert not nav.is_visible()
    nav_link = page.get_by_role("button", name="Menu")
    nav_link.click()
    nav.get_by_role("link", name="Keys", exact=True).click()
    page.wait_for_url(f"{live_server.url}/keys/")
    assert header.bounding_box()["height"] <= MAX_HEADER_HEIGHT


@pytest.mark.parametrize("width", [390, 800, 1024, 1101, 1280, 1501])
def test_the_header_stays_one_line_at_every_width(width: int, live_server: Any, new_context: Any, people: Any) -> None:
    """The longest header: a staff member (the Admin link) with a long display name."""
    people.alice.is_staff = True
    people.alice.save()
    page = new_context(viewport={"width": width, "height": 800}).new_page()
    log_in(page, live_server.url, "alice", "alice-password-123")
    assert page.locator("header.site-header").bounding_box()["height"] <= MAX_HEADER_HEIGHT
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_the_menu_opens_without_javascript(live_server: Any, new_context: Any, people: Any, keystore: Any) -> None:
    context = new_context(viewport=PHONE)
    log_in(context.new_page(), live_server.url, "bob", "bob-password-123")
    no_js = context.browser.new_context(
        viewport=PHONE, java_script_enabled=False, storage_state=context.storage_state()
    )
    try:
        page = no_js.new_page()
        page.goto(f"{live_server.url}/keys/")
        assert page.locator("header.site-header").bounding_box()["height"] <= MAX_HEADER_HEIGHT
        nav = page.get_by_role("navigation", name="Main")
        assert not nav.is_visible()
        page.get_by_role("link", name="Menu").click()
        assert nav.get_by_role("link", name="Audit", exact=True).is_visible()
        page.get_by_role("link", name="Close the menu").click()
        assert not nav.is_visible()
        # Copy buttons need JS: without it they stay hidden (the policies are still there to select).
        page.goto(f"{live_server.url}/keystores/{keystore.pk}/")
        assert page.locator("#trust-policy").is_visible()
        assert page.get_by_role("button", name="Copy trust policy JSON").count() == 0
    finally:
        no_js.close()


def test_the_audit_table_fits_a_laptop_screen(live_server: Any, new_context: Any, keys: list[Any]) -> None:
    page = new_context(viewport=DESKTOP).new_page()
    log_in(page, live_server.url, "bob", "bob-password-123")
    page.goto(f"{live_server.url}/audit/")
    region = page.get_by_role("region", name="Audit events")
    screenshot(page, "13-audit-1280px")
    assert region.evaluate("el => el.scrollWidth <= el.clientWidth"), "the audit table is wider than the page"
    assert _fits_in_viewport(page, region.get_by_role("columnheader", name="Details"))
