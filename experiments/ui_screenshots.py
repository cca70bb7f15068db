"""Screenshots of the MLflow UI that `faceattr ui` serves, as a new user's browser shows it.

    faceattr ui --port 5055 &        # in the project whose mlflow.db to show
    python experiments/ui_screenshots.py --url "$(the address faceattr ui printed)" --out docs/img

Headless Chromium at 1,600 × 1,000 (``apt-get install chromium``), driven over its DevTools
protocol (``websocket-client``, in the dev extra): the runs table at the printed address, then the
page of its first run. MLflow 3.17 opens its Assistant panel on a browser's first visit to a local
server and keeps it closed once closed; the screenshots are taken with it closed (the state a user
is in after dismissing it once), by setting that preference in the page's local storage.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

CLOSED = {"mlflow.assistant.panelOpen_v1": "false", "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}


class Page:
    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def goto(self, url: str, settle: float) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(settle)

    def shot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the runs-table address `faceattr ui` printed")
    p.add_argument("--out", default="docs/img", help="folder for runs_table.png and run_page.png")
    p.add_argument("--settle", type=float, default=12.0, help="seconds a page gets to render")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    port = 9333
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
             f"--user-data-dir={profile}", "--window-size=1600,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as r:
                        targets = [t for t in json.load(r) if t["type"] == "page"]
                    break
                except OSError:
                    time.sleep(0.2)
            page = Page(targets[0]["webSocketDebuggerUrl"])
            page.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
            page.goto(args.url, 3)
            page.evaluate("".join(f"localStorage.setItem({k!r}, {v!r});" for k, v in CLOSED.items()))
            page.goto("about:blank", 1)  # leave the app: the same address would not load it again
            page.goto(args.url, args.settle)
            page.shot(out / "runs_table.png")
            link = page.evaluate(
                "(() => { const a = [...document.querySelectorAll('a[href*=\"/runs/\"]')]"
                ".find(x => /runs\\/[0-9a-f]{32}/.test(x.href)); return a ? a.href : null; })()"
            )
            if not link:
                raise SystemExit("no run link on the runs table: is the store empty?")
            page.goto(str(link), args.settle)
            page.shot(out / "run_page.png")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
