"""An offline server that speaks Gradium's TTS WebSocket protocol, with a real eSpeak NG voice.

It never imports the Pipecat service (or Pipecat at all): it is a standalone server for tests,
benchmarks and the offline demo. Run it from a shell with ``python -m pipecat_gradium.emulator``.
"""

from .account import DEFAULT_VOICES, Account, CapCounts
from .faults import Fault, Hold
from .latency import LatencyModel
from .normalize import WordReports
from .server import GradiumEmulator
from .stats import ConnectionStats, EmulatorStats, RequestStats
from .voice import VoiceUnavailableError

__all__ = [
    "DEFAULT_VOICES",
    "Account",
    "CapCounts",
    "ConnectionStats",
    "EmulatorStats",
    "Fault",
    "GradiumEmulator",
    "Hold",
    "LatencyModel",
    "RequestStats",
    "VoiceUnavailableError",
    "WordReports",
]
