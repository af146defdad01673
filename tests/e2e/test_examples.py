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


LINE = re.compile(r"^\s*([0-9.]+) -\s+([0-9.]+) s  (user|bot|silence)\s+(.*)$", re.M)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


async def test_offline_demo_is_the_conversation_it_prints(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GRADIUM_API_KEY", raising=False)
    demo = load("offline_demo")
    out = tmp_path / "demo.wav"
    rate = 16000
    await demo.run(out, rate)
    printed = capsys.readouterr().out
    assert "embedded emulator" in printed
    assert printed.count("time to first audio") == 3
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == rate
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    length = len(samples) / rate
    lines = [(float(a), float(b), who, note) for a, b, who, note in LINE.findall(printed)]
    assert [who for _, _, who, _ in lines].count("bot") == 3
    assert [who for _, _, who, _ in lines].count("user") == 3

    # The printed timeline is the file: it covers it from 0 to its end without a hole, each
    # silence is silent, and each voice is heard where the timeline puts it.
    assert lines[0][0] == 0.0
    assert abs(max(end for _, end, _, _ in lines) - length) < 0.02
    reach = 0.0
    for start, end, who, note in lines:
        assert start <= reach + 0.011, f"a hole before {start} s"
        reach = max(reach, end)
        inside = samples[int((start + 0.02) * rate) : int((end - 0.02) * rate)]
        if who == "silence":
            assert rms(inside) < 30, (start, end, note)
            assert end - start > 0.3  # a pause a listener hears
        else:
            assert rms(inside) > 500, (start, end, who, note)
    # Each wait for the bot is turn detection, the LLM's first token and the service's time
    # to first audio, as printed, plus at most a few loop turns.
    waits = [(s, e, n) for s, e, who, n in lines if who == "silence" and "detection" in n]
    assert len(waits) == 3
    for start, end, note in waits:
        ttfa = float(re.search(r"time to first audio ([0-9]+) ms", note).group(1)) / 1000
        assert -0.015 <= (end - start) - (0.2 + 0.3 + ttfa) < 0.1, note  # printed to 0.01 s

    # The barge-in is heard where it happens: the user starts over answer 2, the bot stops
    # about the VAD's 0.2 s later, what had played is what the line says, and the service
    # had delivered more than that (the rest dropped as a transport drops it).
    bot2 = next(line for line in lines if line[3].startswith("answer 2"))
    barge = next(line for line in lines if "barging in" in line[3])
    assert bot2[0] < barge[0] < bot2[1]
    assert 0.15 <= bot2[1] - barge[0] <= 0.5
    played = float(re.search(r"answer 2: ([0-9.]+) s played", bot2[3]).group(1))
    delivered = float(re.search(r"([0-9.]+) s of it had been delivered", bot2[3]).group(1))
    assert 1.6 <= played <= bot2[1] - bot2[0] + 0.011 and played + 0.5 < delivered
    # The totals add up to the file (the barge-in counted once).
    totals = re.search(r"bot ([0-9.]+) s, user ([0-9.]+) s, silence ([0-9.]+) s", printed).groups()
    overlap = bot2[1] - barge[0]
    assert abs(sum(map(float, totals)) - overlap - length) < 0.03


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
    # The first URL after the command is the agent's own page, which needs no internet (the
    # browser test opens the path it names); Pipecat's prebuilt page is named too.
    after = readme.split("<!-- browser-command -->")[1]
    assert re.search(r"http://localhost:7860(/\S*)", after).group(1).startswith("/offline/")
    assert "http://localhost:7860/client/" in after
