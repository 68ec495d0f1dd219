"""Benchmark what the webhook plugin costs `outreach send`, endpoint up and down, in one run.

The same campaign (N prospects due their first email and call: 2N events) is sent, as a
whole process, with no plugin (the baseline), and with the webhook plugin posting to a local
endpoint that answers 200, refuses connections, or accepts and never answers. A down
endpoint should cost one event's attempts (its timeouts), then the events wait in the
spool: the ratio to the baseline stays small and does not grow with N.

    .venv/bin/python bench/webhook.py [--prospects 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _util import run_measured  # noqa: E402

OUTREACH = [sys.executable, "-m", "outreach"]
NOW = "2026-03-02T14:15:00+00:00"  # Monday 08:15 in Chicago: inside the morning window
SETTINGS = "timeout = 1\nattempts = 3\nbackoff = 0.2\n"


class Ok(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def endpoint(kind: str) -> Iterator[str | None]:
    """The URL of an endpoint that is `up`, `refused` or `silent` (None: no plugin)."""
    if kind == "none":
        yield None
    elif kind == "up":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            server.server_close()
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        held: list[socket.socket] = []
        if kind == "silent":
            listener.listen(64)

            def accept() -> None:
                with contextlib.suppress(OSError):
                    while True:
                        held.append(listener.accept()[0])

            threading.Thread(target=accept, daemon=True).start()
        else:
            listener.close()
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            for conn in held:
                conn.close()


def make_campaign(root: Path, prospects: int, env: dict[str, str]) -> None:
    subprocess.run([*OUTREACH, "init", str(root)], check=True, stdout=subprocess.DEVNULL)
    csv = root / "prospects.csv"
    with csv.open("w") as fh:
        fh.write("email,first_name,last_name,title,company,domain,industry,employees,country,"
                 "phone\n")
        for i in range(prospects):
            fh.write(f"p{i}@company{i}.example,First{i},Last{i},CFO,Company {i} Inc,"
                     f"company{i}.example,Manufacturing,1000,US,+1 555 {i:04d}\n")
    config = str(root / "outreach.toml")
    for args in (["import", str(csv)], ["enroll", "referral"]):
        subprocess.run([*OUTREACH, *args, "--config", config], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def timed_send(template: Path, work: Path, url: str | None, env: dict[str, str]) -> float:
    """Wall seconds of one `outreach send` on a fresh copy of the campaign."""
    root = work / "run"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root)
    if url is not None:
        shutil.copy(ROOT / "plugins" / "webhook.py", root / "plugins" / "webhook.py")
        with (root / "outreach.toml").open("a") as fh:
            fh.write(f'\n[plugins.webhook]\nurl = "{url}"\n{SETTINGS}')
    argv = [*OUTREACH, "send", "--config", str(root / "outreach.toml")]
    return run_measured(argv, env=env, stderr=subprocess.DEVNULL)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prospects", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "OUTREACH_NOW": NOW, "OUTREACH_LOAD_PLUGINS": "webhook"}
    work = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    try:
        template = work / "campaign"
        make_campaign(template, args.prospects, env)
        kinds = ("none", "up", "refused", "silent")
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.repeat):  # interleaved, so load from elsewhere hits all alike
            for kind in kinds:
                with endpoint(kind) as url:
                    times[kind].append(timed_send(template, work, url, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["none"])
    print(f"outreach send, {args.prospects} prospects ({2 * args.prospects} events), "
          f"median of {args.repeat}; webhook {SETTINGS.strip().replace(chr(10), ', ')}")
    labels = {"none": "no plugin (baseline)", "up": "webhook, endpoint up",
              "refused": "webhook, connection refused", "silent": "webhook, never answers"}
    for kind in kinds:
        median = statistics.median(times[kind])
        print(f"  {labels[kind]:<30} {median:6.2f} s   {median / base:5.2f}x")


if __name__ == "__main__":
    main()
