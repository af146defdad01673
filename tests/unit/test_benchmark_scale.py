"""The scale benchmark's bookkeeping: a level's tries, the pass rule, the targets, the report."""

from typing import Any

import pytest

from benchmarks.scale import spread, summarise_level
from benchmarks.scale_report import ceiling_targets, ceiling_text, render_scale


def _run(n: int, gaps: int, late: float, ttfa: float, cpu: float, attempt: int) -> dict[str, Any]:
    return {
        "sessions": n,
        "attempt": attempt,
        "load_average": [1.0, 1.0, 1.0],
        "wall_s": 9.0,
        "sessions_with_gap": gaps,
        "worst_lateness_s": late,
        "emulator_worst_lateness_s": 0.0,
        "connections_per_session": 1.01,
        "ttfa_median_s": ttfa,
        "ttfa_p95_s": ttfa + 0.1,
        "cpu_utilisation": 0.5,
        "audio_s": 7.0 * n,
        "cpu_per_audio_s": cpu,
        "errors": [],
    }


def _level(n: int, gaps: list[int], late: float, ttfa: float, cpu: float) -> dict[str, Any]:
    runs = [_run(n, g, late + 0.01 * i, ttfa, cpu, i + 1) for i, g in enumerate(gaps)]
    return summarise_level(runs, max_failed=1)


def _client(label: str, levels: list[dict[str, Any]], baseline: bool = False) -> dict[str, Any]:
    passed = [lv["sessions"] for lv in levels if lv["passed"]]
    failed = [lv["sessions"] for lv in levels if not lv["passed"]]
    memory = [
        {
            "client": label,
            "sessions": n,
            "baseline_bytes": 80 * 2**20,
            "started_bytes": 0,
            "held_bytes": 0,
            "peak_bytes": 0,
            "peak_reset": True,
            "per_session_started_bytes": 0.2 * 2**20,
            "per_session_held_bytes": (0.30 if baseline else 0.32) * 2**20,
            "per_session_peak_bytes": 0.33 * 2**20,
            "errors": [],
        }
        for n in (1, 32, max(passed))
    ]
    return {
        "label": label,
        "baseline": baseline,
        "ceiling": {
            "levels": levels,
            "ceiling": max(passed),
            "failed_at": failed[0] if failed else None,
            "capped": not failed,
        },
        "memory": memory,
    }


def _results() -> dict[str, Any]:
    snap = {"loop": {"wall_s": 0.2, "cpu_s": 0.19}, "load_average": [1.5, 1.2, 1.0]}
    ours = _client(
        "ours",
        [
            _level(128, [0, 0, 3], 0.05, 0.30, 0.0028),
            _level(160, [0, 0, 0], 0.06, 0.50, 0.0027),
            _level(192, [40, 50, 0], 1.10, 2.30, 0.0026),
        ],
    )
    builtin = _client(
        "builtin",
        [
            _level(128, [0, 0, 0], 0.02, 1.10, 0.0036),
            _level(160, [20, 5, 0], 0.30, 1.90, 0.0036),
        ],
        baseline=True,
    )
    return {
        "command": "python -m benchmarks.run --scale --ceiling-only",
        "latency_model": {
            "handshake_s": 0.1,
            "setup_s": 0.05,
            "model_delay_s": 0.15,
            "lookahead_words": 2,
        },
        "config": {
            "levels": [128, 160, 192],
            "tries": 3,
            "max_failed": 1,
            "starved": False,
            "extras": False,
        },
        "quick": False,
        "runtime_s": 600.0,
        "machine": {
            "cpus": 2,
            "python": "3.11",
            "pinned_cpu": None,
            "loop_steps": 10_000_000,
            "at_start": snap,
            "at_end": snap,
            "per_level": [{"sessions": n} | snap for n in (128, 160, 192)],
        },
        "clients": {"ours": ours, "builtin": builtin},
    }


def test_a_level_passes_with_at_most_max_failed_tries_with_a_gap() -> None:
    one = summarise_level([_run(64, g, 0.0, 0.3, 0.003, i) for i, g in enumerate([0, 4, 0])], 1)
    two = summarise_level([_run(64, g, 0.0, 0.3, 0.003, i) for i, g in enumerate([0, 4, 1])], 1)
    strict = summarise_level([_run(64, g, 0.0, 0.3, 0.003, i) for i, g in enumerate([0, 4])], 0)
    assert (one["tries_with_gap"], one["passed"]) == (1, True)
    assert (two["tries_with_gap"], two["passed"]) == (2, False)
    assert (strict["tries_with_gap"], strict["passed"]) == (1, False)
    assert one["figures"]["sessions_with_gap"] == {"median": 0, "best": 0, "worst": 4}


def test_spread_skips_missing_values() -> None:
    assert spread([0.3, None, 0.1, 0.2]) == {"median": 0.2, "best": 0.1, "worst": 0.3}
    assert spread([None]) is None


@pytest.mark.parametrize(
    ("ceiling", "failed_at", "capped", "text"),
    [(160, 192, False, "160"), (0, 64, False, "< 64"), (256, None, True, ">= 256 (never failed)")],
)
def test_ceiling_text_says_what_a_reader_may_conclude(
    ceiling: int, failed_at: int | None, capped: bool, text: str
) -> None:
    c = {"ceiling": ceiling, "failed_at": failed_at, "capped": capped}
    assert ceiling_text(c, [64, 96]) == text


def test_targets_compare_ceilings_levels_cpu_and_memory() -> None:
    rows = {
        name.split(",")[0].split(" (")[0]: (evidence, ok)
        for name, evidence, ok in ceiling_targets(_results())
    }
    assert rows["Ceiling >= 1.25x the built-in's"] == ("160 vs 128 (1.25x)", True)
    # Levels up to 1.5x the built-in's ceiling that both ran: 128 and 160. At 128 this
    # service's worst lateness (median of 50, 60, 70 ms) is over the built-in's 30 ms + slack.
    lateness = rows["Worst lateness and TTFA median"]
    assert lateness == (
        "levels both ran (1.5x its ceiling = 192): 128, 160; worst lateness at 128: 60 ms vs 30 ms",
        False,
    )
    cpu = rows["CPU per audio second <= 0.6x the built-in's"]
    assert cpu == ("2.80 vs 3.60 ms at 128 (0.78x)", False)
    memory = rows["RSS per session"]
    assert memory[1] is False and "32: 0.32 vs 0.30 MiB" in memory[0]


def test_report_shows_the_spread_over_tries_and_the_machine() -> None:
    text = render_scale(_results())
    assert "**160** (1.25x)" in text
    assert "| 192 | ours | 2 of 3 | **no** | 40 (0-50) |" in text
    assert "0.200 / 0.190 s at the start" in text
    assert "Command: `python -m benchmarks.run --scale --ceiling-only`" in text


def test_cpu_above_the_pipeline_floor_is_reported_when_the_run_has_the_floor() -> None:
    results = _results()
    names = [name for name, _, _ in ceiling_targets(results)]
    assert not any("pipeline floor" in n for n in names)
    # The floor (no TTS work) costs 2.4 ms per audio second at 128: the clients' own CPU above
    # it is 0.4 vs 1.2 ms, a third, though their totals are 0.78x apart.
    results["clients"]["floor"] = _client("floor", [_level(128, [0, 0, 0], 0.0, 0.9, 0.0024)])
    rows = {name: (evidence, ok) for name, evidence, ok in ceiling_targets(results)}
    [(evidence, ok)] = [v for k, v in rows.items() if k.startswith("CPU per audio second above")]
    assert evidence == (
        "floor 2.40 ms at 128 (0.67x the built-in's total); above it 0.40 vs 1.20 ms (0.33x)"
    )
    assert ok is True
    [memory] = [v for k, v in rows.items() if k.startswith("RSS per session")]
    assert "(pipeline floor, no TTS work: 1: 0.32 MiB; 32: 0.32 MiB" in memory[0]
