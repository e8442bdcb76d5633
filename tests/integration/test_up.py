"""`kairos up` (what `make run` runs): everything starts, URLs are printed, an event flows
end to end, and Ctrl-C stops every child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine.embedded import free_port
from tests.conftest import LIBS, ROOT

pytestmark = pytest.mark.integration


def _children_using(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def _a_newcomer_sends_a_demo_mail_and_reads_it(text: str, base: str, var: Path) -> None:
    """The demo brand's partner signs in with the printed link, sends a quick send, and the
    mail is in the local outbox (var/mail) and on the Outbox page."""
    import re

    line = next(ln for ln in text.splitlines() if "Northgate Manchester" in ln)
    link = re.search(r"http://\S+/login/once/\S+", line)
    assert link, text
    web = httpx.Client(base_url=base, timeout=10)
    assert web.get(link.group(0)).status_code == 303
    form = web.get("/portal/quick?template=thank-you").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    idem = re.search(r'name="idem" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    contact = re.search(r'name="contact" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    r = web.post("/portal/quick", headers={"Origin": base}, data={
        "csrf": csrf, "idem": idem, "template": "thank-you", "contact": contact,
        "v.thank-you.greeting": "Thanks for coming in"})
    assert r.status_code == 303, r.text
    deadline = time.monotonic() + 30
    while not list((var / "mail" / "new").glob("*")):
        assert time.monotonic() < deadline, "no mail reached the local outbox"
        time.sleep(0.2)
    assert "Thanks for coming in" in web.get("/portal/outbox").text


def test_up_runs_everything_and_ctrl_c_stops_it():
    import re
    import shutil
    import tempfile

    base_dir = Path(tempfile.mkdtemp(prefix="kairos-up-"))
    base_dir.chmod(0o711)  # PostgreSQL runs as the postgres user: it must enter var/pg
    var = base_dir / "var"
    (var / "kafka").mkdir(parents=True)
    (var / "kafka" / "libs").symlink_to(LIBS)
    port = free_port()
    env = {**os.environ, "KAIROS_VAR_DIR": str(var), "KAIROS_PORT": str(port),
           "KAIROS_OUTBOX_PORT": str(free_port()), "KAIROS_BOUNCE_PORT": str(free_port())}
    env.pop("KAIROS_SETTINGS_JSON", None)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "up"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    out = b""
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        while b"Ctrl-C stops everything" not in out:
            assert time.monotonic() < deadline, out.decode(errors="replace")
            assert proc.poll() is None, out.decode(errors="replace")
            out += proc.stdout.read() or b""
            time.sleep(0.1)
        text = out.decode()
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/v1/events" in text and f"{base}/demo" in text and f"{base}/dashboard" in text
        # the first start made an admin and printed a one-time sign-in link
        link = re.search(rf"{re.escape(base)}/login/once/\S+", text)
        assert link, text
        signed = httpx.get(link.group(0))
        assert signed.status_code == 303 and "kairos_session" in signed.headers["set-cookie"]
        assert httpx.get(link.group(0)).status_code == 410  # once
        # nothing is open: a key made with the CLI (which finds the running stack) is needed
        r = httpx.post(f"{base}/v1/events", json={"event_id": "up-0", "type": "item_view",
                                                   "visitor_id": "up-v", "item": {"id": "i0"}})
        assert r.status_code == 401, r.text
        made = subprocess.run([sys.executable, "-m", "engine.cli", "keys", "create", "secret",
                               "--scope", "events:write,profiles:read"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        auth = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{base}/v1/events", headers=auth,
                       json={"event_id": "up-1", "type": "item_view", "visitor_id": "up-v",
                             "item": {"id": "i1", "brand": "acme"}})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 45
        while True:
            r = httpx.get(f"{base}/v1/profiles/up-v", headers=auth)
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, "the event never reached the profile"
            time.sleep(0.2)
        assert r.json()["event_count"] == 1
        assert (var / "redis" / "appendonlydir").exists(), "Valkey keeps its AOF under var/"
        assert (var / "kafka" / "node" / "log").exists(), "Kafka keeps its log under var/"
        assert (var / "pg" / "PG_VERSION").exists(), "PostgreSQL keeps its data under var/"
        assert len(_children_using(str(var))) >= 7, "valkey, kafka, postgres, the worker, the API, outbox, mailer"
        _a_newcomer_sends_a_demo_mail_and_reads_it(text, base, var)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    time.sleep(0.5)
    assert proc.returncode == 0
    assert _children_using(str(var)) == [], "every child process stopped"
    shutil.rmtree(base_dir, ignore_errors=True)
