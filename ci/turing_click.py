"""Drives the report's visual Turing test page in headless Chromium through ChromeDriver (the W3C
WebDriver protocol over HTTP; standard library only), as a person would: one click per image.

usage: turing_click.py PAGE STRATEGY
  STRATEGY: `real` (always answer real), `refined` (always answer refined) or `keys-real`
  (press the R key instead of clicking).
Prints one JSON line: what the page showed at the end (#correct, #total, #accuracy, #p-value),
the progress texts seen, the clicks made, and the answers document of the page's download link.
Needs SIMGAN_CHROMIUM (the browser) and chromedriver on PATH or SIMGAN_CHROMEDRIVER.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["value"]


def main():
    page, strategy = sys.argv[1], sys.argv[2]
    driver = os.environ.get("SIMGAN_CHROMEDRIVER") or shutil.which("chromedriver")
    if not driver:
        sys.exit("chromedriver not found (ci/test.sh installs Debian's chromium-driver)")
    port = free_port()
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp()
    try:
        for _ in range(100):
            try:
                if call(base, "GET", "/status").get("ready"):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": os.environ["SIMGAN_CHROMIUM"],
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", f"--user-data-dir={profile}"],
            },
        }}}
        sid = call(base, "POST", "/session", caps)["sessionId"]
        s = f"/session/{sid}"
        call(base, "POST", s + "/url", {"url": "file://" + urllib.parse.quote(os.path.abspath(page))})

        def find(css):
            return call(base, "POST", s + "/element", {"using": "css selector", "value": css})[ELEMENT]

        def text(css):
            return call(base, "GET", f"{s}/element/{find(css)}/text")

        def displayed(css):
            return call(base, "GET", f"{s}/element/{find(css)}/displayed")

        progress, clicks = [], 0
        while not displayed("#result"):
            progress.append(text("#progress"))
            if strategy == "keys-real":
                call(base, "POST", f"{s}/element/{find('#answer-real')}/value", {"text": "r"})
            else:
                call(base, "POST", f"{s}/element/{find('#answer-' + strategy)}/click", {})
            clicks += 1
            if clicks > 5000:
                sys.exit("the page never ended")
        href = call(base, "GET", f"{s}/element/{find('#download')}/attribute/href")
        prefix = "data:application/json;charset=utf-8,"
        answers = json.loads(urllib.parse.unquote(href[len(prefix):])) if href.startswith(prefix) else None
        print(json.dumps({
            "correct": int(text("#correct")),
            "total": int(text("#total")),
            "accuracy": float(text("#accuracy")),
            "p_value": float(text("#p-value")),
            "clicks": clicks,
            "progress_first": progress[:1],
            "progress_last": progress[-1:],
            "answers": answers,
        }))
        call(base, "DELETE", s)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


main()
