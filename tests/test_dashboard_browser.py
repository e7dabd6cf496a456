"""The dashboard in a real headless Chromium, against a real daemon following requests at the simulator, its
uvicorn on a loopback port: progress that moves without a reload, Approve, Cancel, a video that plays, and a
request with an image submitted through the form. Screenshots land in the artifacts folder (tests/browser.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runwatch.simulator import Fault, Simulator

from .browser import Browser, chromium_fixture  # noqa: F401 - the fixture
from .conftest import SAMPLES
from .rig import SEED_REQUESTS, Rig
from .webrig import TOKEN, job_id, served

VIDEO = SEED_REQUESTS["text_to_video"][0]  # veo3.1, 8 s: 320 credits
SPEECH = SEED_REQUESTS["text_to_speech"][0]


def url(rig: Rig) -> str:
    assert rig.daemon is not None and rig.daemon.web is not None
    return rig.daemon.web.url


def csp_errors(browser: Browser) -> list[str]:
    return [
        entry["message"]
        for entry in browser.driver.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]


class TestLive:
    def test_progress_moves_without_a_reload(
        self, rig_factory: Callable[..., Rig], paced_sim: Simulator, tmp_path: Path, chromium: Callable[..., Browser]
    ) -> None:
        """The jobs table shows a running video's progress bar, and its value changes while the page stays the
        same page (a marker set in the page survives): the server-sent events moved it."""
        rig = served(rig_factory, paced_sim, tmp_path)
        rig.drop("film", VIDEO)
        rig.wait("film", {"running"})
        ident = job_id(rig, "film")
        browser = chromium(url(rig))
        browser.open("/jobs")
        bar = f'tr[data-job="{ident}"] progress'
        first = browser.wait(lambda: browser.find(bar).get_attribute("value"), what="a progress value")
        browser.driver.execute_script("window.notReloaded = true;")
        browser.shot("before")
        moved = browser.wait(
            lambda: (value := browser.find(bar).get_attribute("value")) != first and value,
            timeout=40,
            what="the progress bar moving",
        )
        assert browser.driver.execute_script("return window.notReloaded === true;")
        assert int(moved) > int(first)
        browser.shot("after")
        assert csp_errors(browser) == []

    def test_overview_on_a_laptop_and_a_phone(
        self, rig_factory: Callable[..., Rig], paced_sim: Simulator, tmp_path: Path, chromium: Callable[..., Browser]
    ) -> None:
        """The overview shows counts by state, the inbox's health, the credits against the budgets and when
        Runway last answered; on a phone's width nothing is wider than the screen. No CSP violation is logged."""
        paced_sim.faults.add(Fault("fail", endpoint="sound_effect", count=1, failure_code="SAFETY.INPUT.TEXT"))
        rig = served(
            rig_factory, paced_sim, tmp_path, inbox={"approve_above": 300}, budget={"daily": 2000, "monthly": 40000}
        )
        for name in ("text_to_speech", "sound_effect", "image_to_video", "text_to_video"):
            body, media = SEED_REQUESTS[name]
            rig.drop(name, body, media=media)
        rig.wait("text_to_speech")
        rig.wait("sound_effect")
        rig.wait("text_to_video", {"held"})
        rig.wait("image_to_video", {"running"})
        laptop = chromium(url(rig))
        laptop.log_in(TOKEN)

        def answered() -> bool:
            laptop.open("/")  # the overview is read afresh at each load
            return bool(laptop.find("#runway-answered").text.endswith("ago"))

        laptop.wait(answered, what="Runway's last answer")
        counts = {e.get_attribute("data-state-count"): e.text for e in laptop.finds("[data-state-count]")}
        assert counts["held"].startswith("1") and counts["succeeded"].startswith("1")
        assert "watching" in laptop.find("table.list").text
        assert "of 2000" in laptop.driver.page_source and "of 40000" in laptop.driver.page_source
        laptop.shot("overview")
        laptop.open("/jobs")
        laptop.wait(lambda: laptop.finds("tr[data-job] progress:not([hidden])"), what="a running job's bar")
        laptop.shot("jobs")
        assert csp_errors(laptop) == []
        phone = chromium(url(rig), width=390, height=844)
        pages = {"overview": "/", "jobs": "/jobs", "job": f"/jobs/{job_id(rig, 'text_to_video')}", "submit": "/submit"}
        for label, page in pages.items():
            phone.open(page)
            wide = phone.driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth;")
            assert wide <= 0, f"{page} is {wide} px wider than a phone's screen"
            phone.shot(f"phone-{label}")


class TestButtons:
    def test_approve_a_held_request(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path, chromium: Callable[..., Browser]
    ) -> None:
        """Approve on a held request asks first, naming the credits at stake; once confirmed the daemon's answer
        shows and the request ends succeeded, its state changing on the page."""
        rig = served(rig_factory, sim, tmp_path, inbox={"approve_above": 10})
        rig.drop("big", VIDEO)
        rig.wait("big", {"held"})
        browser = chromium(url(rig))
        browser.log_in(TOKEN)
        browser.open(f"/jobs/{job_id(rig, 'big')}")
        assert browser.find("#state").text == "held"
        browser.shot("held")
        browser.find("#approve-button").click()
        asked = browser.accept_confirmation()
        assert "Approve big?" in asked and "320 credits" in asked
        browser.wait(lambda: "answered “approved”" in browser.find("#note").text, what="the daemon's answer")
        browser.wait(lambda: browser.find("#state").text == "succeeded", what="the request succeeding")
        browser.shot("approved")
        assert rig.wait("big")["state"] == "succeeded"

    def test_cancel_a_running_job(
        self, rig_factory: Callable[..., Rig], slow_sim: Simulator, tmp_path: Path, chromium: Callable[..., Browser]
    ) -> None:
        """Cancel on a running job, confirmed, cancels its task at Runway: the page ends showing cancelled."""
        rig = served(rig_factory, slow_sim, tmp_path)
        rig.drop("film", VIDEO)
        rig.wait("film", {"running"})
        browser = chromium(url(rig))
        browser.log_in(TOKEN)
        browser.open(f"/jobs/{job_id(rig, 'film')}")
        browser.find("#cancel-button").click()
        asked = browser.accept_confirmation()
        assert "Cancel film?" in asked and "320 credits" in asked
        browser.wait(lambda: browser.find("#state").text == "cancelled", what="the job cancelled")
        browser.shot("cancelled")
        assert rig.wait("film")["state"] == "cancelled"
        assert len(slow_sim.requests("/v1/tasks/", method="DELETE")) == 1


class TestOutputs:
    def test_the_video_plays(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path, chromium: Callable[..., Browser]
    ) -> None:
        """A finished video's page has a player fed from the outbox: it loads, reports a duration, and plays."""
        rig = served(rig_factory, sim, tmp_path)
        rig.drop("film", VIDEO)
        assert rig.wait("film")["state"] == "succeeded"
        browser = chromium(url(rig))
        browser.open(f"/jobs/{job_id(rig, 'film')}")
        video = browser.find(".outputs video")
        duration = browser.wait(
            lambda: browser.driver.execute_script("return arguments[0].duration;", video), what="a duration"
        )
        assert duration > 0
        browser.driver.execute_script("arguments[0].muted = true; arguments[0].play();", video)
        browser.wait(
            lambda: browser.driver.execute_script("return arguments[0].currentTime;", video) > 0, what="playing"
        )
        browser.shot("video")
        assert csp_errors(browser) == []


class TestSubmit:
    def test_submit_a_request_with_an_image(
        self, rig_factory: Callable[..., Rig], sim: Simulator, tmp_path: Path, chromium: Callable[..., Browser]
    ) -> None:
        """The submit form, with an image uploaded, lands a request in the inbox; the browser is taken to its
        page once the daemon took it, and it succeeds with the image sent as promptImage."""
        rig = served(rig_factory, sim, tmp_path)
        browser = chromium(url(rig))
        browser.log_in(TOKEN)
        browser.open("/submit")
        browser.find('#endpoint option[value="image_to_video"]').click()
        browser.find("#name").send_keys("waves")
        browser.find("#model").send_keys("gen4_turbo")
        browser.find("#promptText").send_keys("waves on a shore")
        browser.find("#ratio").send_keys("1280:720")
        browser.find("#duration").send_keys("5")
        browser.find("#media").send_keys(str(SAMPLES / "still.jpg"))
        browser.find("#media_field").send_keys("promptImage")
        browser.shot("form")
        browser.find("#submit-button").click()
        browser.wait(lambda: "/jobs/" in browser.driver.current_url, what="the request's page")
        browser.wait(lambda: browser.find("#state").text == "succeeded", what="the request succeeding")
        browser.shot("succeeded")
        status = rig.wait("waves")
        assert status["state"] == "succeeded" and status["endpoint"] == "image_to_video"
        assert browser.find(".outputs video")
        assert "promptImage" in browser.find(".media").text and "still.jpg" in browser.find(".media").text
