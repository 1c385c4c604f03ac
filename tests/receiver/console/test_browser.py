"""The console in a real headless browser (Debian's chromium and chromium-driver, driven by
Selenium): an operator sees a panel's alarm arrive without reloading, opens it and
acknowledges it in manual mode while the automation sink is down; a viewer cannot.

Without chromium these tests skip on a developer's machine and FAIL under CI (``CI`` set or
``HYPOTHESIS_PROFILE=ci``): `.ci/run` installs the browser. Set
``RECEIVER_CONSOLE_SCREENSHOTS=docs/console`` to refresh the README's screenshots.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import unavailable
from tests.receiver.console.conftest import PASSWORDS, Console, send_sia

# Debian's paths; another system may point at its own with these variables.
CHROMIUM = os.environ.get("RECEIVER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RECEIVER_CHROMEDRIVER", "/usr/bin/chromedriver")
T = TypeVar("T")

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        unavailable(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


async def in_browser(work: Callable[[], T]) -> T:
    """Selenium blocks: drive the browser from a worker thread while the receiver runs."""
    return await trio.to_thread.run_sync(work)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, 15, poll_frequency=0.1).until(condition, message=what)


def screenshot(driver: WebDriver, tmp_path: Path, name: str, *, publish: bool = True) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    target = os.environ.get("RECEIVER_CONSOLE_SCREENSHOTS")
    if target and publish:
        Path(target).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(target) / f"{name}.png"))


def log_in(driver: WebDriver, console: Console, name: str) -> None:
    driver.get(console.url + "/signals")
    wait_for(driver, lambda d: d.find_elements(By.ID, "password"), "login page")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[name])
    driver.find_element(By.ID, "login").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "signals"), "live signals page")
    wait_for(driver, lambda d: d.find_element(By.ID, "live-state").text == "live", "stream open")


def rows(driver: WebDriver) -> list[str]:
    return [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#signals tbody tr")]


async def test_operator_sees_an_alarm_live_and_acknowledges_it_in_manual_mode(
    console: Console, browser: WebDriver, tmp_path: Path
) -> None:
    """Log in as an operator; a frame from the panel simulator appears in the live list with
    no reload; its page shows the raw frame and peer; with the sink down the operator
    acknowledges it, and the journal names who did."""
    await in_browser(lambda: log_in(browser, console, "otto"))
    await in_browser(lambda: browser.execute_script("window.sameDocument = 'yes';"))
    assert await in_browser(lambda: rows(browser)) == []

    await send_sia(console.receiver, "BA", "012")

    def arrived() -> list[str]:
        found: list[str] = wait_for(
            browser, lambda d: [r for r in rows(d) if "Burglary Alarm" in r], "alarm row"
        )
        return found

    [row] = await in_browser(arrived)
    assert "1234" in row
    assert await in_browser(lambda: browser.execute_script("return window.sameDocument;")) == "yes"
    await in_browser(lambda: screenshot(browser, tmp_path, "live-arrived", publish=False))

    def open_signal() -> str:
        browser.find_element(By.CSS_SELECTOR, "#signals tbody tr a").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "raw"), "signal page")
        return str(browser.find_element(By.ID, "detail").text)

    detail = await in_browser(open_signal)
    assert "#1234|NBA012" in detail
    assert "127.0.0.1:" in detail
    await in_browser(lambda: screenshot(browser, tmp_path, "signal"))

    def acknowledge() -> str:
        wait_for(browser, lambda d: d.find_elements(By.ID, "acknowledge"), "acknowledge button")
        browser.find_element(By.ID, "acknowledge").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "handled"), "handled notice")
        return str(browser.find_element(By.ID, "handled").text)

    assert "acknowledged by otto" in await in_browser(acknowledge)
    conn = sqlite3.connect(console.receiver.db)
    try:
        assert conn.execute("SELECT user FROM manual_acks").fetchall() == [("otto",)]
        assert conn.execute("SELECT user FROM audit WHERE action = 'acknowledge'").fetchall() == [
            ("otto",)
        ]
    finally:
        conn.close()

    for code, zone in (("FA", "004"), ("OP", "001"), ("YT", "000"), ("BA", "007")):
        await send_sia(console.receiver, code, zone)

    def other_pages() -> None:
        for path, name in (
            ("/signals", "live-signals"),
            ("/manual", "manual-queue"),
            ("/status", "status"),
            ("/accounts?q=1234", "accounts"),
            ("/accounts/S1/1234", "account"),
        ):
            browser.get(console.url + path)
            wait_for(browser, lambda d: d.find_elements(By.TAG_NAME, "h1"), path)
            screenshot(browser, tmp_path, name)

    await in_browser(other_pages)


async def test_viewer_cannot_acknowledge(
    console: Console, browser: WebDriver, tmp_path: Path
) -> None:
    """A viewer sees the waiting alarm but no button, and the API refuses the page's own
    attempt (403); nothing is acknowledged."""
    await send_sia(console.receiver, "BA", "012")
    await in_browser(lambda: log_in(browser, console, "vera"))

    def manual_page() -> tuple[str, int]:
        browser.get(console.url + "/manual")
        wait_for(browser, lambda d: d.find_elements(By.ID, "queue"), "manual queue")
        buttons = len(browser.find_elements(By.CSS_SELECTOR, "button.acknowledge"))
        return str(browser.find_element(By.ID, "queue").text), buttons

    queue, buttons = await in_browser(manual_page)
    assert "waiting for an operator" in queue
    assert buttons == 0
    await in_browser(lambda: screenshot(browser, tmp_path, "viewer-manual-queue"))

    def try_anyway() -> Any:
        signal_id = browser.find_element(By.CSS_SELECTOR, "#queue tr[data-signal]").get_attribute(
            "data-signal"
        )
        return browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/api/v1/signals/' + arguments[0] + '/acknowledge', {method: 'POST'})"
            ".then(r => r.json().then(b => done([r.status, b.error])));",
            signal_id,
        )

    status, error = await in_browser(try_anyway)
    assert status == 403
    assert error == "vera is a viewer; this needs an operator"
    conn = sqlite3.connect(console.receiver.db)
    try:
        assert conn.execute("SELECT count(*) FROM manual_acks").fetchone() == (0,)
    finally:
        conn.close()


@pytest.mark.parametrize("console", ["postgresql"], indirect=True)
async def test_on_postgresql_an_operator_sees_a_signal_arrive(
    console: Console, browser: WebDriver
) -> None:
    """The console on the PostgreSQL store, in the browser: log in (a session row written on
    PostgreSQL), and a frame from the panel simulator appears in the live list, no reload."""
    await in_browser(lambda: log_in(browser, console, "otto"))
    assert await in_browser(lambda: rows(browser)) == []
    await send_sia(console.receiver, "BA", "012")

    def arrived() -> list[str]:
        found: list[str] = wait_for(
            browser, lambda d: [r for r in rows(d) if "Burglary Alarm" in r], "alarm row"
        )
        return found

    [row] = await in_browser(arrived)
    assert "1234" in row
    assert console.store.sql("SELECT count(*) FROM console_sessions") == [(1,)]
