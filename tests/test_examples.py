"""The README's main job (the offline demo) runs as written, and the Daily example is well formed."""

import ast
import importlib.util
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


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
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 16000
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    seconds = len(samples) / 16000
    # Answers 1 and 3 in full (about 11 s of eSpeak speech) plus about 1 s of answer 2.
    assert 7 < seconds < 25
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 500


def test_daily_agent_is_valid_python_with_a_bot_entry_point():
    tree = ast.parse((ROOT / "examples" / "daily_agent.py").read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.AsyncFunctionDef)}
    assert {"bot", "run_bot"} <= names
