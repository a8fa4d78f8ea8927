"""Load a page in headless Chromium and record what it did, over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol commands on its file
descriptor 3 and writes replies and events on 4, each message one JSON document ended by a NUL
byte, so no port, no websocket library and nothing else is needed. :func:`load` opens a page,
waits until it sets ``document.body.dataset.ready``, and returns every request the page made,
every console message and uncaught exception, the values of the expressions asked for, and a
PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

#: the names Chromium goes by on Debian and elsewhere
EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def executable() -> str | None:
    for name in EXECUTABLES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    requests: list[str] = field(default_factory=list)  # URLs of every request the page made
    console: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    exceptions: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)  # expression -> its value in the page
    screenshot: bytes = b""

    @property
    def errors(self) -> list[str]:
        return self.exceptions + [text for level, text in self.console if level in ("error", "assert")]


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer, self.next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=30.0):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self.receive(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def receive(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed its pipe (exit {self.proc.poll()})")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)


def load(url: str, *, expressions=(), size=(1400, 1000), timeout: float = 60.0) -> PageLoad:
    """Open ``url`` in a fresh headless Chromium profile and report on it (see the module doc)."""
    exe = executable()
    if exe is None:
        raise FileNotFoundError("no Chromium on the PATH (Debian: apt-get install chromium)")
    commands_r, commands_w = os.pipe()
    replies_r, replies_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="geoseg-chromium-")

    def wire() -> None:  # in the child: the protocol's descriptors 3 (commands) and 4 (replies)
        os.dup2(commands_r, 3)
        os.dup2(replies_w, 4)

    args = [
        exe,
        "--headless",
        "--remote-debugging-pipe",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        "about:blank",
    ]
    proc = subprocess.Popen(
        args,
        preexec_fn=wire,
        pass_fds=(3, 4),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(commands_r)
    os.close(replies_w)
    pipe = _Pipe(proc, commands_w, replies_r)
    out = PageLoad()
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.send("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + timeout
        ready = None
        while time.monotonic() < deadline:
            ready = pipe.send(
                "Runtime.evaluate",
                {"expression": "document.body && document.body.dataset.ready", "returnByValue": True},
                session=session,
            )
            if ready.get("result", {}).get("value"):
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"{url} did not set document.body.dataset.ready in {timeout:.0f} s")
        for expr in expressions:
            r = pipe.send(
                "Runtime.evaluate",
                {"expression": expr, "returnByValue": True, "awaitPromise": True},
                session=session,
            )
            if "exceptionDetails" in r:
                raise RuntimeError(f"{expr}: {r['exceptionDetails'].get('text')}")
            out.values[expr] = r["result"].get("value")
        shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)
        out.screenshot = base64.b64decode(shot["data"])
        time.sleep(0.3)  # let late events (a failed request, a timer's console error) arrive
        pipe.send("Runtime.evaluate", {"expression": "1"}, session=session)
    finally:
        try:
            pipe.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(commands_w)
        os.close(replies_r)
        shutil.rmtree(profile, ignore_errors=True)
    for ev in pipe.events:
        method, params = ev.get("method"), ev.get("params", {})
        if method == "Network.requestWillBeSent":
            out.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            out.console.append((params.get("type", "log"), text))
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            out.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
        elif method == "Log.entryAdded":
            e = params.get("entry", {})
            out.console.append(
                (e.get("level", "info"), f"{e.get('source')}: {e.get('text')} {e.get('url', '')}")
            )
    return out
