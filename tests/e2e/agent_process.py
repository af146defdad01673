"""Run an example agent as its README says, in a child process, offline, on a free local port.

As ``tests/test_browser_agent.py`` does: no ``*_API_KEY`` in its environment and no ``.env``
loaded (python-dotenv >= 1.2 skips every ``load_dotenv()`` under ``PYTHON_DOTENV_DISABLED``), so
a developer's keys cannot switch a test to the real services.
"""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

import aiohttp
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env() -> dict[str, str]:
    """The environment without any service key, and with ``.env`` files ignored."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_SECRET"):
        env.pop(name, None)
    assert Version(metadata.version("python-dotenv")) >= Version("1.2"), (
        "python-dotenv >= 1.2 is needed to keep a .env's keys out of the agent tests"
    )
    env["PYTHON_DOTENV_DISABLED"] = "1"
    return env


@asynccontextmanager
async def running_agent(script: str, log: Path, *args: str, ready_s: float = 45.0):
    """Run ``examples/<script>`` under Pipecat's runner until the block ends.

    Yields:
        ``(process, port)`` once the runner answers ``/status``.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, f"examples/{script}", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT,
        env=offline_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + ready_s
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"{script} exited: {log.read_text()[-2000:]}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/status") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{script} did not serve within {ready_s:.0f} s: {log.read_text()[-2000:]}"
                    )
                await asyncio.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_for_log(log: Path, pattern: str, timeout_s: float, after: int = 0) -> re.Match:
    """The first match of ``pattern`` in the agent's log past offset ``after``, once written."""
    deadline = time.monotonic() + timeout_s
    while True:
        match = re.compile(pattern).search(log.read_text(errors="replace"), after)
        if match:
            return match
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the agent never logged {pattern!r} within {timeout_s:.0f} s: "
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        await asyncio.sleep(0.05)


def open_tcp_states(pid: int) -> list[str]:
    """The TCP states of every socket the process holds (``LISTEN``, ``ESTABLISHED``, ...)."""
    names = {
        "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
        "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
        "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
    }  # fmt: skip
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    states = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                states.append(names.get(fields[3], fields[3]))
    return states
