"""Turn the measured results into the markdown table, the target check and the chart."""

from pathlib import Path
from typing import Any

from .clients import DEFAULT_FIRST_CHUNK_WORDS
from .measure import IN_FLIGHT_TOKEN
from .traces import STANDARD, TRACES, Trace

Number = float | int | None


def _ms(v: Number) -> str:
    return "n/a" if v is None else f"{v * 1000:.0f} ms"


def _targets_table(heading: str, rows: list[tuple[str, str, bool | None]]) -> list[str]:
    """A heading and a Target / Measured / Met table, then a blank line."""
    lines = [heading, "", "| Target | Measured | Met |", "|---|---|---|"]
    for name, evidence, ok in rows:
        mark = "n/a" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {name} | {evidence} | {mark} |")
    return [*lines, ""]


def _num(v: Number, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def first_word_limit(trace: Trace, model_delay_s: float) -> float:
    """The limit under the model: the first word complete, plus the model delay.

    The first word is complete when a token starting with whitespace follows it.

    Args:
        trace: The trace.
        model_delay_s: The emulator's model delay.

    Returns:
        Seconds from the first token.
    """
    tokens = trace.tokens
    idx = next(i for i in range(1, len(tokens)) if tokens[i][:1].isspace())
    return idx / trace.tokens_per_s + model_delay_s


def figures(entry: dict[str, Any]) -> dict[str, Number]:
    """The headline figures of one client."""
    s = entry["series"]
    std = s[STANDARD.name]
    f: dict[str, Number] = {
        "ttfa_median": std["ttfa_median_s"],
        "ttfa_p95": std["ttfa_p95_s"],
    }
    for t in TRACES:
        if t is not STANDARD and t.name in s:
            f[f"ttfa:{t.name}"] = s[t.name]["ttfa_median_s"]
    b, w = entry.get("barge_in", {}), entry.get("barge_in_whole", {})
    f["after_barge_in_ttfa"] = b.get("next_ttfa_s")
    f["after_barge_in_delta"] = (
        None if b.get("next_ttfa_s") is None else b["next_ttfa_s"] - std["ttfa_median_s"]
    )
    f["waste_cut"] = b.get("waste_s")
    f["waste_whole"] = w.get("waste_s")
    f["unheard_cut"] = b.get("chars_unheard")
    f["unheard_whole"] = w.get("chars_unheard")
    f["stale"] = (b.get("stale_frames") or 0) + (w.get("stale_frames") or 0)
    f["stray"] = (b.get("stray_words") or 0) + (w.get("stray_words") or 0)
    fl = entry.get("barge_in_in_flight", {})
    f["stray_in_flight"] = fl.get("stray_words")
    f["in_flight_delta"] = (
        None if fl.get("next_ttfa_s") is None else fl["next_ttfa_s"] - std["ttfa_median_s"]
    )
    f["messages"] = std["messages_per_answer"]
    f["split"] = std["split_words_per_answer"]
    cpu = sum(v["cpu_s"] for v in s.values())
    audio = sum(v["audio_s"] for v in s.values())
    f["cpu"] = cpu / audio if audio else None
    levels = entry.get("concurrency", {}).get("levels", [])
    f["cpu_load"] = levels[-1]["cpu_per_audio_s"] if levels else None
    f["sessions"] = entry.get("concurrency", {}).get("max_sessions_without_gap")
    return f


ROWS: list[tuple[str, str, str]] = [
    # key, label, format
    ("ttfa_median", "TTFA median, standard trace", "ms"),
    ("ttfa_p95", "TTFA p95, standard trace", "ms"),
    *[(f"ttfa:{t.name}", f"TTFA median, {t.name}", "ms") for t in TRACES if t is not STANDARD],
    ("after_barge_in_ttfa", "TTFA of the answer after a barge-in (median)", "ms"),
    ("after_barge_in_delta", "  minus steady-state TTFA", "delta"),
    ("waste_cut", "Audio generated after barge-in, LLM cut at barge-in (s)", "s"),
    ("waste_whole", "Audio generated after barge-in, whole answer already sent (s)", "s"),
    ("unheard_cut", "Chars sent never heard, LLM cut at barge-in", "n"),
    ("unheard_whole", "Chars sent never heard, whole answer already sent", "n"),
    ("stale", "Stale frames after the InterruptionFrame (all rounds)", "i"),
    ("stray", "Words of the interrupted answer sent after the barge-in (all rounds)", "i"),
    ("stray_in_flight", "  the same, a token in flight at each barge-in ***", "i"),
    ("in_flight_delta", "  its next answer's TTFA minus steady-state TTFA", "delta"),
    ("messages", "Text messages per answer (standard)", "n"),
    ("split", "Messages ending inside a word, per answer", "n"),
    ("cpu", "Client CPU per audio second, answer series (ms/s) *", "cpu"),
    ("cpu_load", "Client CPU per audio second, highest concurrency level (ms/s) *", "cpu"),
    ("sessions", "Concurrent real-time sessions without a gap **", "i"),
]


def _cell(v: Number, kind: str, base: Number) -> str:
    if v is None:
        return "n/a"
    if kind == "delta":
        return f"{v * 1000:+.0f} ms"
    if kind == "ms":
        text = f"{v * 1000:.0f}"
    elif kind == "s":
        text = f"{v:.2f}"
    elif kind == "cpu":
        text = f"{v * 1000:.1f}"
    elif kind == "i":
        text = f"{v:.0f}"
    else:
        text = f"{v:.1f}" if v != int(v) else f"{v:.0f}"
    if base:
        text += f" ({v / base:.2f}x)"
    return text


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The targets, each with the measured evidence and whether it is met."""
    c = {k: figures(v) for k, v in results["clients"].items()}
    ours, base = c["ours"], c["builtin"]
    tok, lk = c["builtin_token"], c["livekit_style"]
    out: list[tuple[str, str, bool | None]] = []

    def add(name: str, evidence: str, ok: bool | None) -> None:
        out.append((name, evidence, ok))

    r = ours["ttfa_median"] / base["ttfa_median"]  # type: ignore[operator]
    add("Standard TTFA <= 0.60x built-in default", f"{r:.2f}x", r <= 0.60)
    add(
        "Standard TTFA below built-in token mode",
        f"{_ms(ours['ttfa_median'])} vs {_ms(tok['ttfa_median'])}",
        ours["ttfa_median"] < tok["ttfa_median"],  # type: ignore[operator]
    )
    add(
        "Standard TTFA below the LiveKit-style client",
        f"{_ms(ours['ttfa_median'])} vs {_ms(lk['ttfa_median'])}",
        ours["ttfa_median"] < lk["ttfa_median"],  # type: ignore[operator]
    )
    add(
        "At most 1/4 of token mode's messages",
        f"{_num(ours['messages'])} vs {_num(tok['messages'])} / 4 = {tok['messages'] / 4:.1f}",  # type: ignore[operator]
        ours["messages"] <= tok["messages"] / 4,  # type: ignore[operator]
    )
    add("No message ends inside a word", f"{_num(ours['split'])} per answer", ours["split"] == 0)
    d = ours["after_barge_in_delta"]
    add(
        "After-barge-in TTFA within 15 ms of steady state",
        f"{'n/a' if d is None else f'{d * 1000:+.0f} ms'}",
        None if d is None else abs(d) <= 0.015,
    )
    for key, what in (("waste_cut", "LLM cut"), ("waste_whole", "whole answer sent")):
        v = ours[key]
        add(
            f"Audio after barge-in <= 0.3 s ({what})",
            f"{_num(v, 2)} s",
            None if v is None else v <= 0.3,
        )
    add("Zero stale frames", f"{ours['stale']}", ours["stale"] == 0)
    for key, what in (("cpu", "answer series"), ("cpu_load", "highest concurrency level")):
        a, b = ours[key] or 0, base[key] or 0
        add(
            f"CPU per audio second <= built-in's ({what})",
            f"{a * 1000:.2f} vs {b * 1000:.2f} ms/s ({a / b if b else 0:.2f}x)",
            a <= b,
        )
    return out


def render(results: dict[str, Any]) -> str:
    """The markdown report: latency model, main table, per-trace table, targets, details."""
    lm = results["latency_model"]
    sp = results["speeds"]
    clients = results["clients"]
    keys = list(clients)
    base_key = next(k for k in keys if clients[k]["baseline"])
    figs = {k: figures(clients[k]) for k in keys}
    lines: list[str] = []
    lines.append(
        "# pipecat-gradium benchmarks" + (" (QUICK smoke run)" if results["quick"] else "")
    )
    lines.append("")
    lines.append(
        f"Latency model (emulator): handshake {lm['handshake_s'] * 1000:.0f} ms, setup "
        f"{lm['setup_s'] * 1000:.0f} ms, model delay {lm['model_delay_s'] * 1000:.0f} ms, "
        f"look-ahead {lm['lookahead_words']} words, generation speed {sp['series']:g}x real "
        f"time in the answer series (speed does not move first audio under this model), "
        f"{sp['barge_in']:g}x in the barge-in runs, {sp['concurrency']:g}x in the concurrency "
        "runs. LLM: sub-word tokens, time to first token 300 ms after "
        "LLMFullResponseStartFrame. Pipeline output 48 kHz for every client (the built-in "
        "only does 48 kHz)."
    )
    lines.append("")
    cfg = results["config"]
    lines.append(
        f"Answers: {cfg['standard_answers']} on the standard trace (33 tok/s, 40 words, "
        f"6-word first sentence), {cfg['other_answers']} on each other trace, after one "
        f"warm-up answer per client; barge-in rounds: {cfg['barge_in_rounds']} (LLM cut) + "
        f"{cfg['barge_in_whole_rounds']} (whole answer sent) + "
        f"{cfg.get('barge_in_in_flight_rounds', 0)} (LLM cut, a token in flight). Run time "
        f"{results['runtime_s']:.0f} s on {results['machine']['cpus']} CPUs."
    )
    lines.append("")
    header = "| Figure | " + " | ".join(clients[k]["label"] for k in keys) + " |"
    lines.append(header)
    lines.append("|---|" + "---|" * len(keys))
    for key, label, kind in ROWS:
        base = figs[base_key].get(key)
        cells = [_cell(figs[k].get(key), kind, base) for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Ratios in brackets are to the built-in's default (sentence) mode. TTFA: first "
        "LLMTextFrame queued -> first TTSAudioRawFrame leaving the service."
    )
    lines.append(
        "\\* CPU: `getrusage` of the benchmark process (the pipeline, its client, the token "
        "streamer and recorders) over all the series' answers (or all sessions of the highest "
        "concurrency level), divided by the seconds of audio delivered. Differences under "
        "about 10% are within run-to-run noise (compare the two pipecat-gradium columns, "
        "which differ only by one flush message). The emulator runs in its own process on the same 2 cores and is not "
        "counted, but competes for them."
    )
    lines.append(
        "\\*\\* Concurrency: N pipelines in one process, each speaking a 20-word sentence, "
        "starts staggered over 1 s; a gap = an audio frame leaving the service > 100 ms later "
        "than real-time playback started at the session's first audio frame needs it. "
        "Levels tried: " + ", ".join(str(n) for n in cfg["concurrency_levels"]) + " (stops at "
        "the first level with a gap or the time cap; a figure equal to the highest level tried "
        "is a lower bound). The emulator shares the 2 cores, so high levels also measure it."
    )
    lines.append(
        "\\*\\*\\* Every barge-in that cuts the LLM is followed by the answer's "
        "`LLMFullResponseEndFrame`, as a cancelled Pipecat LLM pushes it; in these rounds a "
        f"token that was on its way ({IN_FLIGHT_TOKEN.strip()!r}) also arrives after the "
        "`InterruptionFrame` that overtook it. Counted: words sent to Gradium after the "
        "barge-in beyond the next answer's own."
    )
    lines.append("")
    # Limit under the model.
    lines.append("## Time to first audio per trace (median / p95, ms)")
    lines.append("")
    lines.append("| Trace | limit * | " + " | ".join(clients[k]["label"] for k in keys) + " |")
    lines.append("|---|---|" + "---|" * len(keys))
    for t in TRACES:
        limit = first_word_limit(t, lm["model_delay_s"])
        cells = []
        for k in keys:
            s = clients[k]["series"].get(t.name)
            cells.append(
                "n/a" if not s else f"{_ms(s['ttfa_median_s'])[:-3]} / {_ms(s['ttfa_p95_s'])[:-3]}"
            )
        lines.append(f"| {t.name} | {limit * 1000:.0f} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "\\* The limit under the model: the first word complete (a token starting a new word "
        "arrived) plus the model delay."
    )
    lines.append("")
    if results.get("sweep"):
        sweep_trace = next(iter(next(iter(results["sweep"].values()))["series"]))
        lines.append(f"## First-chunk size (trace: {sweep_trace})")
        lines.append("")
        lines.append(
            "| first_chunk_words | TTFA median | TTFA p95 | messages/answer | first messages |"
        )
        lines.append("|---|---|---|---|---|")
        rows: list[tuple[str, dict[str, Any]]] = [
            (k.removeprefix("ours_fcw"), v["series"][sweep_trace])
            for k, v in results["sweep"].items()
        ]
        rows.append(
            (f"{DEFAULT_FIRST_CHUNK_WORDS} (default)", clients["ours"]["series"][sweep_trace])
        )
        rows.sort(key=lambda r: r[0])
        for n, s in rows:
            first = " · ".join(f"`{m!r}`" for m in s["first_messages"][:2])
            lines.append(
                f"| {n} | {_ms(s['ttfa_median_s'])} | {_ms(s['ttfa_p95_s'])} | "
                f"{s['messages_per_answer']:.1f} | {first} |"
            )
        noflush = clients.get("ours_noflush")
        if noflush:
            s = noflush["series"][sweep_trace]
            first = " · ".join(f"`{m!r}`" for m in s["first_messages"][:2])
            lines.append(
                f"| {DEFAULT_FIRST_CHUNK_WORDS}, flush off | {_ms(s['ttfa_median_s'])} | {_ms(s['ttfa_p95_s'])} | "
                f"{s['messages_per_answer']:.1f} | {first} |"
            )
        lines.append("")
    lines += _targets_table("## Targets", targets(results))
    lines.append("## Concurrency detail")
    lines.append("")
    lines.append(
        "| Client | N | sessions with gap | worst lateness | emulator worst lateness | TTFA median | client CPU use | CPU ms per audio s |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for k in keys:
        for row in clients[k].get("concurrency", {}).get("levels", []):
            lines.append(
                f"| {clients[k]['label']} | {row['sessions']} | {row['sessions_with_gap']} | "
                f"{_ms(row['worst_lateness_s'])} | {_ms(row['emulator_worst_lateness_s'])} | "
                f"{_ms(row['ttfa_median_s'])} | {_num((row['cpu_utilisation'] or 0) * 100, 0)}% | "
                f"{_num((row.get('cpu_per_audio_s') or 0) * 1000, 2)} |"
            )
    lines.append("")
    return "\n".join(lines)


def write_chart(results: dict[str, Any], path: Path) -> None:
    """A grouped bar chart: median TTFA per client and trace, whiskers to p95.

    Without matplotlib (the ``bench`` extra) the chart is skipped with a line saying so; the
    tables are written either way.
    """
    try:
        import matplotlib
    except ImportError:
        print(f'no chart ({path.name}): install the bench extra: pip install -e ".[bench]"')
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = results["clients"]
    keys = list(clients)
    traces = [t for t in TRACES if all(t.name in clients[k]["series"] for k in keys)]
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for i, k in enumerate(keys):
        med = [clients[k]["series"][t.name]["ttfa_median_s"] * 1000 for t in traces]
        p95 = [clients[k]["series"][t.name]["ttfa_p95_s"] * 1000 for t in traces]
        xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(traces))]
        err = [[0] * len(med), [max(0.0, p - m) for p, m in zip(p95, med)]]
        ax.bar(xs, med, width, label=clients[k]["label"], yerr=err, capsize=2)
    lm = results["latency_model"]
    for j, t in enumerate(traces):
        limit = first_word_limit(t, lm["model_delay_s"]) * 1000
        ax.hlines(limit, j - 0.45, j + 0.45, colors="black", linestyles="dotted")
    ax.set_xticks(range(len(traces)))
    ax.set_xticklabels([t.name for t in traces], fontsize=8)
    ax.set_ylabel("time to first audio (ms): median, whisker to p95")
    ax.set_title(
        "TTFA per client and token trace (emulator: handshake "
        f"{lm['handshake_s'] * 1000:.0f} ms, model delay {lm['model_delay_s'] * 1000:.0f} ms, "
        f"look-ahead {lm['lookahead_words']} words); dotted: first word + model delay",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
