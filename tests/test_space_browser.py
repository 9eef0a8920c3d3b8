"""The Space in a real browser: `streamlit run` in a subprocess, driven by headless Chromium through Playwright.

Chromium comes from Debian (scripts/install_browser.sh installs `chromium` and `fonts-noto-cjk`); the test skips
when /usr/bin/chromium is absent. The tiny random model rarely finishes a question, so the server runs space/app.py
through a launcher that scripts `QuestionGenerator.generate`; loading the model is real. The screenshot is saved as
space.png in the test's tmp_path.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: run scripts/install_browser.sh"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "space" / "app.py"
SERVER_START_TIMEOUT_S = 30
WAIT_TIMEOUT_MS = 30_000  # a bound, not a timing: the first page view may build the tiny model (~5 s)
# Markup that would change the page title if the browser ever rendered it as HTML.
PAYLOAD = "<img src=x onerror=\"document.title='XSS'\"> 이 태그는 글자로 보여야 한다."
PARAGRAPH = ("세종대왕은 조선의 네 번째 임금으로, 집현전 학자들과 함께 훈민정음을 만들었다. "
             "그는 측우기와 해시계 같은 과학 기구의 제작도 지원했다.\n" + PAYLOAD)
# space/app.py with a scripted model: question n echoes the paragraph's last line, the markup included.
LAUNCHER = f'''
import runpy
from collections import Counter

from qg.generate import GeneratedQuestions, QuestionGenerator


def scripted_generate(self, contexts, num_questions=5, **kwargs):
    return [GeneratedQuestions([f"{{n}}번째 질문: {{context.splitlines()[-1]}}" for n in range(1, num_questions + 1)],
                               Counter(), False) for context in contexts]


QuestionGenerator.generate = scripted_generate
runpy.run_path({str(APP)!r}, run_name="__main__")
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def space_url(tmp_path):
    """URL of a running `streamlit run` of the scripted app; the server is stopped afterwards."""
    launcher = tmp_path / "scripted_app.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    port = free_port()
    log = tmp_path / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", str(launcher), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, cwd=REPO, env={**os.environ, "QG_MODEL": "tiny-random-exaone"},
                                  stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer after {SERVER_START_TIMEOUT_S}s:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def test_questions_appear_in_a_real_browser_as_text(space_url, tmp_path):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, timeout=WAIT_TIMEOUT_MS,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1400}, locale="ko-KR")
            page.set_default_timeout(WAIT_TIMEOUT_MS)
            dialogs = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(space_url, wait_until="domcontentloaded")

            page.get_by_label("문단 (paragraph)").fill(PARAGRAPH)
            count_slider = page.get_by_role("slider").first
            count_slider.focus()
            count_slider.press("ArrowLeft")  # 5 -> 3 questions, by keyboard as a user could
            count_slider.press("ArrowLeft")
            page.get_by_role("button", name="질문 만들기 (generate)").click()

            # expect() retries until the timeout: under load the caption has been seen drawn before the code blocks.
            questions = page.locator('[data-testid="stCode"] code')
            sync_api.expect(questions).to_have_text([f"{n}번째 질문: {PAYLOAD}" for n in (1, 2, 3)],
                                                    timeout=WAIT_TIMEOUT_MS)
            for number in ("1.", "2.", "3."):
                sync_api.expect(page.get_by_text(number, exact=True)).to_be_visible(timeout=WAIT_TIMEOUT_MS)
            sync_api.expect(page.get_by_text("⏱")).to_be_visible(timeout=WAIT_TIMEOUT_MS)
            assert page.locator("img[src='x']").count() == 0
            assert page.title() != "XSS" and not dialogs
            page.screenshot(path=tmp_path / "space.png", full_page=True)
        finally:
            browser.close()
