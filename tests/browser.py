"""Headless Chromium driven over the DevTools protocol on a pipe (stdlib only).

`--screenshot` with a virtual-time budget guesses how long a single-page app needs and, on a
loaded CI machine, photographs the loading screen. Here the test waits for the page to show
what it must show, then takes the screenshot.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path


class Chromium:
    def __init__(self, user_data_dir: Path, width: int = 1400, height: int = 900):
        child_in, self._to_browser = os.pipe()
        self._from_browser, child_out = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--remote-debugging-pipe", f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}",
                 "about:blank"]

        def wire_fds() -> None:
            # Chromium's pipe transport reads commands on fd 3 and writes replies on fd 4; move both
            # ends out of the way first so that neither dup2 clobbers the other.
            high_in, high_out = fcntl.fcntl(child_in, fcntl.F_DUPFD, 10), fcntl.fcntl(child_out, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.process = subprocess.Popen(["chromium", *flags], close_fds=False, preexec_fn=wire_fds,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_in), os.close(child_out)
        self._next_id = 0
        self._buffer = b""
        self._session = None
        self._width, self._height = width, height

    def _send(self, method: str, params: dict | None = None, session: bool = True, timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self._session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.time()))
            if not ready:
                break
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        target = self._send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self._session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        self._send("Emulation.setDeviceMetricsOverride",
                   {"width": self._width, "height": self._height, "deviceScaleFactor": 1, "mobile": False})
        self._send("Page.navigate", {"url": url})

    def text(self) -> str:
        # visible text plus form values: the App shows the dataset name in its selector's <input>
        expression = ("document.body ? document.body.innerText + '\\n' + "
                      "Array.from(document.querySelectorAll('input')).map(i => i.value).join('\\n') : ''")
        result = self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value", "") or ""

    def wait_for_text(self, needles: list[str], timeout: float) -> str:
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = self.text()
            if all(needle in text.replace(",", "") for needle in needles):
                return text
            time.sleep(1)
        raise TimeoutError(f"page never showed {needles}; it showed:\n{text[:2000]}")

    def screenshot(self, path: Path) -> Path:
        data = self._send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._send("Browser.close", session=False, timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
