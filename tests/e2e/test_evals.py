"""Pipecat's eval harness passes the scripted scenarios in ``evals/`` against both agents, offline.

Each agent runs as the README says (offline: the embedded emulator speaks, the scripted stand-in
answers); ``pipecat eval run evals/`` (the same command, as ``python -m pipecat.evals``) connects
to the runner's ``/ws`` route, where the agent's ``create_transport`` serves the eval transport.
The scenarios' checks are all scripted (event order, ``text_contains``, ``within_ms``), so no
judge LLM and no transcription model is built. The two agents run side by side.
"""

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.e2e.agent_process import ROOT, offline_env, running_agent, wait_for_log

pytestmark = pytest.mark.timeout(120)

AGENTS = ("browser_agent.py", "phone_agent.py")


async def run_evals(script: str, tmp_path: Path) -> tuple[int, str, str]:
    """Run the agent and the harness against it: (exit code, harness output, agent log)."""
    log = tmp_path / f"{script}.log"
    async with running_agent(script, log) as (_, port):
        harness = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipecat.evals",
            "run",
            "evals/",
            "--bot-url",
            f"ws://127.0.0.1:{port}/ws",
            "--verbose",
            "--logs-dir",
            str(tmp_path / f"{script}.evals"),
            cwd=ROOT,
            env=offline_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(harness.communicate(), 90)
        if script == "phone_agent.py":
            # The harness ends the bot's session when the run is over, leaving nothing running.
            await wait_for_log(log, r"Session ended: 0 of its tasks still running", 15)
    return harness.returncode or 0, out.decode(errors="replace"), log.read_text()


async def test_eval_scenarios_pass_offline_against_both_agents(tmp_path):
    results = await asyncio.gather(*(run_evals(script, tmp_path) for script in AGENTS))
    for script, (code, out, agent_log) in zip(AGENTS, results, strict=True):
        print(f"--- pipecat eval run evals/ against {script}\n{out}")
        assert code == 0, f"{script}: the harness failed:\n{out}\nagent log:\n{agent_log[-3000:]}"
        summary = re.search(r"(\d+)/(\d+) passed", out)
        assert summary and summary.group(1) == summary.group(2) != "0", out
        # Every expectation of the greeting, the answer, the interruption and the next answer.
        assert out.count("✓") >= 9 and "✗" not in out, out
        # Offline, whatever keys the developer has; the scenario was served by the eval
        # transport on /ws, and the bot spoke (tts_response is Gradium's word timestamps).
        assert "speaking through the embedded emulator" in agent_log
        assert "scripted stand-in, not an LLM" in agent_log
        assert "Detected transport: eval" in agent_log
