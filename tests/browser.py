"""A real headless Chromium driven by Selenium (Debian's chromium and chromium-driver), for the dashboard's tests.

Screenshots go to ``$RUNWATCH_ARTIFACTS`` or else ``test-artifacts/`` at the top of the checkout (ignored by git),
one file per test and step. The flags keep Chromium off the network: without the background-networking ones it
waits for services it cannot reach on a closed network.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from .conftest import need_tool

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
)
ARTIFACTS = Path(os.environ.get("RUNWATCH_ARTIFACTS") or Path(__file__).resolve().parent.parent / "test-artifacts")


class Browser:
    """One Chromium window and the test's screenshot folder."""

    def __init__(self, driver: webdriver.Chrome, base: str, label: str) -> None:
        self.driver, self.base, self.label = driver, base, label
        self.shots: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, check: Callable[[], Any], timeout: float = 30.0, what: str = "the page") -> Any:
        """The first truthy answer of ``check``; a page between two loads is looked at again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = check()
            except WebDriverException:
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                self.shot("timeout")
                raise AssertionError(f"{what} did not come true in {timeout} s at {self.driver.current_url}")
            time.sleep(0.1)

    def accept_confirmation(self) -> str:
        """Say yes to the page's confirmation dialog; its text."""

        def alert() -> Any:
            try:
                return self.driver.switch_to.alert
            except NoAlertPresentException:
                return None

        dialog = self.wait(alert, 10, "a confirmation dialog")
        text = str(dialog.text)
        dialog.accept()
        return text

    def log_in(self, token: str) -> None:
        self.open("/login?next=/")
        self.find("#token").send_keys(token)
        self.find("#login-button").click()
        self.wait(lambda: self.finds('form[action="/logout"]'), what="the session")

    def shot(self, step: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.label}-{step}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        return path


@pytest.fixture(name="chromium")
def chromium_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Browser]]:
    """A factory: ``chromium(base_url)`` opens a fresh headless Chromium (its own profile) at that server."""
    need_tool("chromium", "chromedriver", package="chromium and chromium-driver")
    drivers: list[webdriver.Chrome] = []
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)

    def start(base: str, width: int = 1280, height: int = 900) -> Browser:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        profile = tmp_path / f"chromium-profile-{len(drivers)}"
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        drivers.append(driver)
        return Browser(driver, base, label)

    yield start
    for driver in drivers:
        driver.quit()
