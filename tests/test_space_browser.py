"""The staged Space in a real browser, on the CPU engine: a fresh virtual environment that has only the Space's
requirements.txt installed runs `streamlit run` in the folder `qg-publish` stages, and headless Chromium drives it
through Playwright.

The fresh environment's site-packages holds exactly the distributions space/requirements.txt names and their
dependencies, linked from this environment (downloading them again would take gigabytes and test nothing of ours):
whatever app.py or its copy of qg/ imports beyond them fails there. QG_CPU_MODEL names a tiny CTranslate2 export,
so this CPU machine loads the Space's CPU path for real. The tiny random model rarely finishes a question, so the
server runs app.py through a launcher that runs the real `QuestionGenerator.generate` and then shows scripted
questions that echo the paragraph's markup. Chromium comes from Debian (scripts/install_browser.sh installs
`chromium` and `fonts-noto-cjk`); the test skips when /usr/bin/chromium is absent. The screenshot is saved as
space.png in the test's tmp_path.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sysconfig
import time
import urllib.request
import venv
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from qg.hub.publish import SPACE_SOURCE, stage_space
from qg.models.tiny import tiny_model_dir
from qg.serving.ctranslate2 import convert

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: run scripts/install_browser.sh"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

SERVER_START_TIMEOUT_S = 60  # the fresh environment imports torch and transformers from cold files
WAIT_TIMEOUT_MS = 30_000  # a bound, not a timing
# Markup that would change the page title if the browser ever rendered it as HTML.
PAYLOAD = "<img src=x onerror=\"document.title='XSS'\"> 이 태그는 글자로 보여야 한다."
PARAGRAPH = ("세종대왕은 조선의 네 번째 임금으로, 집현전 학자들과 함께 훈민정음을 만들었다. "
             "그는 측우기와 해시계 같은 과학 기구의 제작도 지원했다.\n" + PAYLOAD)
# app.py with scripted questions: question n echoes the paragraph's last line, the markup included. The real
# generation runs first, so the CPU engine works in this environment, not just loads.
LAUNCHER = '''
import runpy
from collections import Counter

from qg.generate import GeneratedQuestions, QuestionGenerator

real_generate = QuestionGenerator.generate


def scripted_generate(self, contexts, num_questions=5, **kwargs):
    real_generate(self, contexts, num_questions=num_questions, **kwargs)
    return [GeneratedQuestions([f"{n}번째 질문: {context.splitlines()[-1]}" for n in range(1, num_questions + 1)],
                               Counter(), False) for context in contexts]


QuestionGenerator.generate = scripted_generate
runpy.run_path("app.py", run_name="__main__")
'''


def requirement_closure(requirements: Path) -> dict[str, object]:
    """Every installed distribution that `requirements` names or needs, by canonical name."""
    lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    pending = [Requirement(line) for line in lines if line]
    found = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        found[name] = distribution(requirement.name)
        pending += [Requirement(r) for r in found[name].requires or []]
    return found


@pytest.fixture(scope="module")
def space_python(tmp_path_factory) -> Path:
    """The python of a new venv holding only the Space's requirements (and what they require)."""
    env_dir = tmp_path_factory.mktemp("space-env") / "venv"
    venv.create(env_dir, with_pip=False)
    site = next((env_dir / "lib").glob("python*/site-packages"))
    ours = Path(sysconfig.get_paths()["purelib"])
    for dist in requirement_closure(SPACE_SOURCE / "requirements.txt").values():
        assert dist.files is not None, f"{dist.name} has no RECORD: cannot tell its files"
        for top in {f.parts[0] for f in dist.files} - {"..", "__pycache__"}:
            if not (site / top).exists():
                (site / top).symlink_to(ours / top)
    return env_dir / "bin" / "python"


@pytest.fixture(scope="module")
def staged_space(tmp_path_factory) -> Path:
    """The Space folder as `qg-publish` stages it (app.py, requirements.txt, README.md, a copy of qg/)."""
    out = tmp_path_factory.mktemp("staged") / "space"
    stage_space(out, model_repo="ORG/exaone-3.5-2.4b-korquad-qg-lora", base_model="ORG/EXAONE-3.5-2.4B-Instruct-llama",
                dataset_repo="ORG/korquad-qg")
    (out / "scripted_app.py").write_text(LAUNCHER, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory) -> Path:
    return convert(tiny_model_dir(), tmp_path_factory.mktemp("ct2") / "tiny-int8", quantization="int8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """This environment less what would let the staged Space import the checkout's qg/ or this venv's packages."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def test_the_space_environment_has_only_the_space_requirements(space_python, staged_space):
    def imports(module: str) -> bool:
        return subprocess.run([space_python, "-c", f"import {module}"], cwd=staged_space, env=server_env(),
                              capture_output=True).returncode == 0

    assert imports("ctranslate2") and imports("streamlit") and imports("qg.serving.ctranslate2")
    assert not imports("datasets") and not imports("lighteval")  # the project's, not the Space's


@pytest.fixture
def space_url(space_python, staged_space, tiny_ct2, tmp_path):
    """URL of a running `streamlit run` of the staged, scripted app on the CPU engine; stopped afterwards."""
    port = free_port()
    log = tmp_path / "streamlit.log"
    command = [space_python, "-m", "streamlit", "run", "scripted_app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]
    env = server_env(QG_CPU_MODEL=str(tiny_ct2), QG_CACHE=str(tmp_path / "cache"))
    with open(log, "wb") as output:
        server = subprocess.Popen(command, cwd=staged_space, env=env, stdout=output, stderr=subprocess.STDOUT)
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
            # The page redraws itself once the model has loaded in the background: the CPU engine, not transformers.
            sync_api.expect(page.get_by_text("CTranslate2 int8_float32 · cpu")).to_be_visible(timeout=WAIT_TIMEOUT_MS)

            page.get_by_role("textbox", name="문단 (paragraph)").fill(PARAGRAPH)
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
