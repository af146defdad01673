"""The README's main job (the offline demo) runs as written and says what its WAV holds; the
Daily example names every missing key before anything starts; the extras cover both transports."""

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_offline_demo_writes_speech(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GRADIUM_API_KEY", raising=False)
    demo = load("offline_demo")
    out = tmp_path / "demo.wav"
    await demo.run(out, 16000)
    printed = capsys.readouterr().out
    assert "embedded emulator" in printed
    assert printed.count("time to first audio") == 3
    assert "barge-in" in printed
    played = [float(x) for x in re.findall(r"([0-9.]+) s played", printed)]
    delivered = float(re.search(r"([0-9.]+) s of it had been delivered", printed).group(1))
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 16000
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    seconds = len(samples) / 16000
    # The lines say what the file holds: answers 1 and 3 in full, and of answer 2 what had
    # played when the barge-in reached the output (a second and a little), not what the
    # service had delivered by then (faster than real time).
    assert len(played) == 3
    assert abs(sum(played) - seconds) < 0.02
    assert 1.0 <= played[1] < 1.3 < delivered
    assert 7 < seconds < 25
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 500


def test_daily_agent_is_valid_python_with_a_bot_entry_point():
    tree = ast.parse((ROOT / "examples" / "daily_agent.py").read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.AsyncFunctionDef)}
    assert {"bot", "run_bot"} <= names


def run_daily_agent(*args: str, keys: tuple[str, ...] = ("GRADIUM_API_KEY",)):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({key: "set" for key in keys})
    env["PYTHON_DOTENV_DISABLED"] = "1"  # a developer's .env must not fill the keys in
    return subprocess.run(
        [sys.executable, "examples/daily_agent.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_daily_agent_names_every_missing_key_once_before_starting():
    daily = run_daily_agent("--transport", "daily")
    assert daily.returncode == 1
    assert "Missing DEEPGRAM_API_KEY, OPENAI_API_KEY, DAILY_API_KEY:" in daily.stderr
    assert "GRADIUM_API_KEY," not in daily.stderr
    # One line, no traceback, and nothing started (Pipecat not even imported).
    assert daily.stderr.strip().count("\n") == 0 and "Traceback" not in daily.stderr
    assert "Pipecat" not in daily.stdout + daily.stderr.split("Missing")[0]
    webrtc = run_daily_agent("--transport=webrtc")
    assert "Missing DEEPGRAM_API_KEY, OPENAI_API_KEY:" in webrtc.stderr


def test_daily_agent_without_its_extra_names_this_projects_extra():
    # daily-python is imported only for --transport daily: nothing at module level.
    tree = ast.parse((ROOT / "examples" / "daily_agent.py").read_text())
    top_imports = [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module]
    assert not [m for m in top_imports if "daily" in m]
    daily = load_daily_agent()
    missing = daily.missing_modules(["-t", "webrtc"])
    assert "daily" not in missing
    if not missing:
        pytest.skip("the daily extra is installed here: the agent would start")
    keys = ("GRADIUM_API_KEY", "DEEPGRAM_API_KEY", "OPENAI_API_KEY")
    webrtc = run_daily_agent("-t", "webrtc", keys=keys)
    assert webrtc.returncode == 1
    assert 'install this project\'s daily extra: pip install -e ".[daily]"' in webrtc.stderr
    assert webrtc.stderr.strip().count("\n") == 0 and "Traceback" not in webrtc.stderr
    assert "uv add" not in webrtc.stderr


def load_daily_agent():
    spec = importlib.util.spec_from_file_location(
        "daily_agent_checks", ROOT / "examples" / "daily_agent.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Only the checks above the guard run: the module stops importing at Pipecat's services.
    source = (ROOT / "examples" / "daily_agent.py").read_text()
    head = source.split("from agent_pipeline import run_agent")[0]
    exec(compile(head, spec.origin or "daily_agent.py", "exec"), module.__dict__)
    return module


def test_extras_install_both_transports_the_examples_use():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def pipecat_extras(name: str) -> set[str]:
        found = [re.search(r"pipecat-ai\[([^\]]+)\]", r) for r in extras[name]]
        return {e.strip() for m in found if m for e in m.group(1).split(",")}

    # The Daily agent's printed install line serves --transport daily and --transport webrtc.
    assert {"daily", "webrtc", "runner", "deepgram", "openai", "silero"} <= pipecat_extras("daily")
    # The browser agent: runner, SmallWebRTC and the prebuilt page; the emulator's voice.
    assert {"webrtc", "runner"} <= pipecat_extras("webrtc")
    assert any(r.startswith("espeakng-loader") for r in extras["webrtc"])
    # The suite runs the browser agent and the span tests.
    assert {"webrtc", "runner", "tracing"} <= pipecat_extras("dev")


def test_readme_browser_command_runs_the_agent_the_browser_test_runs():
    readme = (ROOT / "README.md").read_text()
    line = readme.split("<!-- browser-command -->")[1].split("```bash")[1].split("```")[0].strip()
    assert line.endswith(".venv/bin/python examples/browser_agent.py")
    assert '".[webrtc]"' in line
    assert "http://localhost:7860/client/" in readme
