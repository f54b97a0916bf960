"""Helpers of the browser tests: Chromium, and what a person sees on the page."""

from __future__ import annotations

import os
import shutil

import pytest

from deploy.procs import ROOT

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
# Generous: CI shares two cores between Chromium, gunicorn, Redis and nginx.
expect.set_options(timeout=10_000)

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make system-deps installs it)")
        pytest.skip("chromium is not installed")
    return path


def log_in(page, name):
    page.fill(".usernameInput", name)
    page.press(".usernameInput", "Enter")
    expect(page.locator(".chat.page")).to_be_visible()


def send(page, text):
    page.fill(".inputMessage", text)
    page.press(".inputMessage", "Enter")


def logs(page):
    return page.locator(".messages .log")


class SocketIOBlock:
    """Cuts a long-polling page (``?transports=polling``) off from socket.io
    until ``lift()``; the rest of the site still loads, so it can reload."""

    def __init__(self, context):
        self.blocked = True
        context.route("**/socket.io/**", self._http)

    def _http(self, route):
        if self.blocked:
            route.abort()
        else:
            route.continue_()

    def lift(self):
        self.blocked = False


def connection(page):
    """The header's connection state (data-state and words)."""
    return page.locator(".chatHeader .connection")


def messages_from(page, name):
    return page.locator(f'.messages .message:not(.typing)[data-username="{name}"]')


def shot(page, name):
    """A screenshot once every line has faded in."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.messages li')]"
        ".every(e => getComputedStyle(e).opacity === '1')"
    )
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
