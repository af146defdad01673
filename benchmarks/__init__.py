"""Side-by-side benchmarks: pipecat-gradium vs Pipecat's built-in Gradium TTS and a LiveKit-style client.

Run ``python -m benchmarks.run`` (``--quick`` for a smoke run). See ``benchmarks/README.md``.
"""
