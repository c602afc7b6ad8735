"""Screenshots of a sweep in the MLflow UI, for docs/ and the README: the page `sweep ui NAME`
opens (the trials ranked), the judged answers side by side, the Models tab. Headless Debian
chromium through Playwright, no click: what a person sees on opening each printed URL.

    python -m sweep run search_spaces/beta_grid.yaml
    python scripts/ui_screenshots.py beta_grid --out docs/
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

# MLflow opens its assistant panel on a browser's first visit to a local server; a person closes
# it once (the README says so); a fresh headless profile would show it on every page.
ASSISTANT_SEEN = "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')"
PAGES = {"runs": "mlflow_ui_runs.png", "answers": "mlflow_ui_answers.png", "models": "mlflow_ui_models.png"}
READY = {"runs": "matching runs", "answers": "Group by", "models": "Source run"}  # text drawn once each page is


def screenshot(url: str, ready: str, path: Path) -> None:
    """`url` as a person sees it on opening it (the assistant panel closed once), once `ready`
    is drawn, saved as the PNG `path`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_init_script(ASSISTANT_SEEN)
        page = context.new_page()
        page.goto(url)
        page.get_by_text(ready).first.wait_for(timeout=60_000)
        time.sleep(3)  # the cells' values arrive after the rows
        page.screenshot(path=str(path))
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="sweep name")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs (default: docs/)")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args()
    ui = subprocess.Popen(
        [sys.executable, "-m", "sweep", "ui", args.name, "--results-dir", args.results_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        urls = {"runs": ui.stdout.readline().strip()}
        for line in iter(ui.stderr.readline, ""):
            label, _, url = line.partition(": http")
            if label == "judged answers side by side":
                urls["answers"] = "http" + url.strip()
            elif label == "models":
                urls["models"] = "http" + url.strip()
                break
        for name, url in urls.items():
            screenshot(url, READY[name], args.out / PAGES[name])
            print(args.out / PAGES[name])
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
