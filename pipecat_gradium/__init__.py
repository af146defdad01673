"""Gradium streaming text-to-speech for Pipecat."""

__version__ = "0.1.0"
