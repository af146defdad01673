"""The emulator's command line explains itself: units and defaults, one line per fault, and a
one-line install hint (no traceback) when the voice is not installed."""

import subprocess
import sys

from pipecat_gradium.emulator import Fault
from pipecat_gradium.emulator.__main__ import FAULT_HELP, build_parser

UNITS = (
    "ms",
    "milliseconds",
    "seconds",
    "words",
    "chunks",
    "sessions",
    "real time",
    "0 to 1",
    "port",
)


def test_help_gives_every_options_unit_and_default():
    parser = build_parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = action.help or ""
        assert "(default:" in text, action.dest
        numeric = action.type in (int, float)
        if numeric and action.dest != "seed":
            assert any(unit in text for unit in UNITS), (action.dest, text)


def test_help_lists_each_fault_on_one_line():
    assert set(FAULT_HELP) == set(Fault), "a fault without a --help line"
    text = build_parser().format_help()
    lines = text.split("faults (--fault NAME")[1].splitlines()[1:]
    assert [line.split()[0] for line in lines if line.strip()] == [f.value for f in Fault]


def test_without_the_voice_one_line_names_the_install_command():
    code = (
        "import sys; sys.modules['espeakng_loader'] = None\n"
        "from pipecat_gradium.emulator.__main__ import main\n"
        "sys.exit(main(['--port', '0']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'pipecat-gradium[emulator]'" in lines[0]
