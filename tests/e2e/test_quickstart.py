"""The README's quickstart (examples/quickstart.py) runs as written, warns of nothing deprecated
and writes the whole answer, although EndFrame follows it at once."""

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_writes_the_whole_answer_with_no_deprecation_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("PYTHONWARNINGS", None)  # Python's default filters, as a user runs it
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Pipecat reports a deprecated name used by the caller as a DeprecationWarning attributed
    # to it, which Python's default filters show for __main__.
    assert "Deprecat" not in done.stderr, done.stderr
    assert "| ERROR" not in done.stderr and "| WARNING" not in done.stderr, done.stderr
    with wave.open(str(tmp_path / "out" / "quickstart.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    seconds = len(samples) / 24000
    printed = float(re.search(r"([0-9.]+) s of speech", done.stdout).group(1))
    assert abs(printed - seconds) < 0.01
    # The whole sentence, in the emulator's voice, not the part before the EndFrame.
    from pipecat_gradium.emulator.voice import ESPEAK_RATE, synthesize

    spoken = len(synthesize("Your train leaves at eight fifteen.").samples) / ESPEAK_RATE
    assert seconds > 0.9 * spoken


def test_readme_shows_the_quickstart_file_as_it_is():
    readme = (ROOT / "README.md").read_text()
    code = (ROOT / "examples" / "quickstart.py").read_text().rstrip("\n")
    assert f"```python\n{code}\n```" in readme
