"""One headless Chromium and one `mlflow ui` per test run, for the tests that look at
pages: the report (test_pipeline), the MLflow UI (test_tracking_pipeline) and the
REST API the UI serves (test_pipeline).

A test module takes these fixtures with ``pytest_plugins = ["helpers.browser"]``. A
plugin is registered once however many modules name it, so each session fixture here
starts once per process; importing a fixture into two modules instead would register it
twice, and start it twice. (Test modules import its names only under TYPE_CHECKING:
pytest cannot rewrite the asserts of a plugin module imported before it registers it,
and says so.) The tests that use them carry ``xdist_group("browser")`` so that one
pytest-xdist worker runs them all: one Chromium and one UI per run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.pipeline import TinyBuild
from helpers.runs import running_server

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (`make browser`)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Every wait on a page (navigation, a screenshot) may take this long: a hang guard only.
# Playwright's default, 30 s, is too close to the real times under two busy workers (a
# full-page screenshot of the report alone takes 8 s at a load of 7 on 2 cores).
PAGE_TIMEOUT_MS = 120_000


@dataclass(frozen=True)
class Chromium:
    browser: Any  # playwright's sync ``Browser``

    @contextlib.contextmanager
    def page(self, **kwargs: Any) -> Iterator[Any]:
        """A new page (``Browser.new_page(**kwargs)``), closed on leaving. It has a
        context of its own, so nothing (cookies, the MLflow UI's local storage) passes
        from one test to the next."""
        page = self.browser.new_page(**kwargs)
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield page
        finally:
            page.close()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    """Debian's Chromium, headless, launched once per process."""
    if not CHROMIUM.exists():
        pytest.fail(f"needs Debian's chromium at {CHROMIUM}: run `make browser`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield Chromium(browser)
        finally:
            browser.close()


@dataclass(frozen=True)
class MlflowUI:
    url: str  # http://127.0.0.1:PORT
    repo: Path  # the tracked copy of the tiny build whose store it serves

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.repo}/mlflow.db"


@pytest.fixture(scope="session")
def mlflow_ui(
    tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowUI]:
    """`mlflow ui`, the command `make ui` runs (it serves MLflow's REST API too), over a
    tracked copy of the tiny build, started once per process. Tests only read through it:
    the store stays as the build left it."""
    root = tmp_path_factory.mktemp("mlflow-ui")
    repo = tiny_build.copy(root / "repo", runs=True)
    uri = f"sqlite:///{repo}/mlflow.db"
    mlflow = Path(sys.executable).parent / "mlflow"

    def command(port: int) -> list[str]:
        # one worker, not mlflow's default four (`make ui` names none): one request at a time
        return [
            *(str(mlflow), "ui", "--backend-store-uri", uri),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ]

    # cwd: the folder above the copy, for anything the UI writes on its own account
    # as `make ui` runs it: without MLflow's job runner (GenAI jobs; ~6 more processes)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with running_server(command, "/health", root / "ui.log", cwd=root, env=env) as server:
        yield MlflowUI(server.url, repo)
