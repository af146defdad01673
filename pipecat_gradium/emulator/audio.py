"""Output formats: resampling, G.711 encoding, the WAV header and 80 ms chunking."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

CHUNK_S = 0.08


@dataclass(frozen=True)
class OutputFormat:
    """One of Gradium's output formats.

    Attributes:
        name: The ``output_format`` value.
        sample_rate: Samples per second.
        encoding: ``"pcm"`` (s16le), ``"wav"`` (header then s16le), ``"ulaw"`` or ``"alaw"``.
    """

    name: str
    sample_rate: int
    encoding: str

    @property
    def frame_size(self) -> int:
        """Samples in one 80 ms chunk."""
        return int(round(self.sample_rate * CHUNK_S))


FORMATS: dict[str, OutputFormat] = {
    "pcm": OutputFormat("pcm", 48000, "pcm"),
    "wav": OutputFormat("wav", 48000, "wav"),
    "ulaw_8000": OutputFormat("ulaw_8000", 8000, "ulaw"),
    "alaw_8000": OutputFormat("alaw_8000", 8000, "alaw"),
    **{
        f"pcm_{rate}": OutputFormat(f"pcm_{rate}", rate, "pcm")
        for rate in (8000, 16000, 22050, 24000, 44100, 48000)
    },
}


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample int16 audio with soxr.

    Args:
        samples: Mono int16 samples.
        from_rate: Their rate.
        to_rate: The wanted rate.

    Returns:
        Mono int16 samples at ``to_rate``.
    """
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.int16)
    import soxr  # a Pipecat dependency; imported here to keep module import light

    out = soxr.resample(samples.astype(np.float32) / 32768.0, from_rate, to_rate)
    return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)


def _ulaw(samples: np.ndarray) -> bytes:
    # G.711 mu-law, the classic segment encoder.
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    exp = np.clip(exp, 0, 7)
    mant = (mag >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def _alaw(samples: np.ndarray) -> bytes:
    # G.711 A-law on the 13-bit magnitude, even bits inverted.
    x = samples.astype(np.int32) >> 3
    sign = np.where(x >= 0, 0x80, 0)
    mag = np.minimum(np.where(x >= 0, x, -x - 1), 4095)
    exp = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exp = np.clip(exp, 0, 7)
    mant = np.where(exp == 0, mag >> 1, mag >> exp) & 0x0F
    return ((sign | (exp << 4) | mant) ^ 0x55).astype(np.uint8).tobytes()


def wav_header(sample_rate: int) -> bytes:
    """A streaming WAV header (mono s16le, unknown length).

    Args:
        sample_rate: Samples per second.

    Returns:
        The 44-byte RIFF header, with sizes set to the maximum as streams do.
    """
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def encode(samples: np.ndarray, fmt: OutputFormat) -> bytes:
    """Encode int16 samples in the format's byte layout (without any header).

    Args:
        samples: Mono int16 samples at ``fmt.sample_rate``.
        fmt: The output format.

    Returns:
        The bytes for an ``audio`` message.
    """
    if fmt.encoding == "ulaw":
        return _ulaw(samples)
    if fmt.encoding == "alaw":
        return _alaw(samples)
    return samples.astype("<i2").tobytes()
