"""The scale report as markdown.

The ceiling over K tries per level, memory per session, the machine's speed and load beside
them, and (in the full run) jittered TTFA and barge-ins under load.
"""

from collections.abc import Callable
from typing import Any

from .report import _ms, _num, _targets_table

Row = tuple[str, str, bool | None]
#: A lateness or TTFA this much above the built-in's still counts as "no worse" (a few loop
#: turns; below the 100 ms gap threshold the difference is not audible).
SLACK_S = 0.010


def _mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 2**20:.2f}"


def _spread(sp: dict[str, float] | None, fmt: Callable[[float], str]) -> str:
    """``median (best-worst)``; just the value when every try gave the same."""
    if not sp:
        return "n/a"
    if sp["best"] == sp["worst"]:
        return fmt(sp["median"])
    return f"{fmt(sp['median'])} ({fmt(sp['best'])}-{fmt(sp['worst'])})"


def _ms_bare(v: float) -> str:
    return "inf" if v == float("inf") else f"{v * 1000:.0f}"


def _count(v: float) -> str:
    return f"{v:g}"


def _cpu_ms(v: float) -> str:
    return f"{v * 1000:.2f}"


def _pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def ceiling_text(c: dict[str, Any], levels: list[int]) -> str:
    """The ceiling as a reader should take it: a value, a lower bound or below the first level."""
    n = c["ceiling"]
    if not n:
        return f"< {levels[0]}" if c["failed_at"] is not None else "n/a"
    return f">= {n} (never failed)" if c["capped"] else f"{n}"


def level_of(c: dict[str, Any], n: int) -> dict[str, Any] | None:
    """One client's summary at ``n`` sessions, None if it did not run that level."""
    return next((lv for lv in c["levels"] if lv["sessions"] == n), None)


def _memory_at(entry: dict[str, Any], n: int) -> dict[str, Any] | None:
    return next(
        (m for m in entry.get("memory", []) if m.get("sessions") == n and "error" not in m), None
    )


def _memory_cell(entry: dict[str, Any], key: str) -> str:
    parts = []
    for m in entry.get("memory", []):
        value = "failed" if "error" in m else ("n/a" if m.get(key) is None else _mib(m[key]))
        parts.append(f"{value} @{m['sessions']}")
    return " / ".join(parts) or "n/a"


# --------------------------------------------------------------------------- targets


def ceiling_targets(results: dict[str, Any]) -> list[Row]:
    """Issue 18's ceiling, CPU, socket and memory targets, with the evidence for each."""
    clients, cfg = results["clients"], results["config"]
    ours, base = clients["ours"], clients["builtin"]
    co, cb = ours["ceiling"], base["ceiling"]
    which = "starved" if cfg["starved"] else "normal"
    out: list[Row] = []
    ratio = co["ceiling"] / cb["ceiling"] if cb["ceiling"] else None
    bound = " (ours a lower bound)" if co["capped"] else ""
    out.append(
        (
            f"Ceiling >= 1.25x the built-in's, {which} configuration (a level passes when at "
            f"most {cfg['max_failed']} of {cfg['tries']} tries has a gap)",
            f"{ceiling_text(co, cfg['levels'])} vs {ceiling_text(cb, cfg['levels'])}"
            + ("" if ratio is None else f" ({ratio:.2f}x){bound}"),
            None if ratio is None or cb["capped"] else ratio >= 1.25,
        )
    )
    limit = 1.5 * cb["ceiling"] if cb["ceiling"] else None
    common = [
        lv["sessions"]
        for lv in co["levels"]
        if level_of(cb, lv["sessions"]) and (limit is None or lv["sessions"] <= limit)
    ]
    worse = []
    for n in common:
        a, b = level_of(co, n), level_of(cb, n)
        assert a and b
        for key, what in (("worst_lateness_s", "worst lateness"), ("ttfa_median_s", "TTFA")):
            fa, fb = a["figures"][key], b["figures"][key]
            if fa and fb and fa["median"] > fb["median"] + SLACK_S:
                worse.append(f"{what} at {n}: {_ms(fa['median'])} vs {_ms(fb['median'])}")
    reach = "" if limit is None else f" (1.5x its ceiling = {limit:.0f})"
    out.append(
        (
            "Worst lateness and TTFA median (medians over the tries) <= the built-in's + "
            f"{SLACK_S * 1000:.0f} ms at every level up to 1.5x its ceiling",
            (
                f"levels both ran{reach}: {', '.join(map(str, common)) or 'none'}; "
                + ("; ".join(worse) if worse else "no worse at any")
            ),
            None if not common else not worse,
        )
    )
    shared = [n for n in common if n <= min(co["ceiling"], cb["ceiling"])] or common
    if shared:
        n = max(shared)
        a, b = level_of(co, n), level_of(cb, n)
        assert a and b
        ca, cpb = a["figures"]["cpu_per_audio_s"], b["figures"]["cpu_per_audio_s"]
        r = ca["median"] / cpb["median"] if ca and cpb and cpb["median"] else None
        out.append(
            (
                "CPU per audio second <= 0.6x the built-in's, at the highest level both passed",
                "n/a"
                if r is None
                else f"{_cpu_ms(ca['median'])} vs {_cpu_ms(cpb['median'])} ms at {n} ({r:.2f}x)",
                None if r is None else r <= 0.6,
            )
        )
        floor_row = _cpu_above_floor(clients, n, ca, cpb)
        if floor_row:
            out.append(floor_row)
    big = [r for lv in co["levels"] for r in lv["runs"] if r["sessions"] >= 100]
    worst = max((r["connections_per_session"] for r in big), default=None)
    out.append(
        (
            "<= 1.1 server connections per session at 100+ sessions",
            "n/a" if worst is None else f"{worst:.3f} (worst try at 100+)",
            None if worst is None else worst <= 1.1,
        )
    )
    pairs = []
    for n in sorted({m.get("sessions") for m in ours.get("memory", [])} - {None}):
        a, b = _memory_at(ours, n), _memory_at(base, n)
        if a and b:
            pairs.append((f"{n}", a, b))
    out.append(
        (
            "RSS per session (held after speaking) <= the built-in's, at the same N",
            "; ".join(
                f"{n}: {_mib(a['per_session_held_bytes'])} vs "
                f"{_mib(b['per_session_held_bytes'])} MiB"
                for n, a, b in pairs
            )
            + _floor_memory(clients.get("floor"), [int(n) for n, _, _ in pairs])
            or "n/a",
            None
            if not pairs
            else all(
                a["per_session_held_bytes"] <= b["per_session_held_bytes"] for _, a, b in pairs
            ),
        )
    )
    return out


def _floor_memory(floor: dict[str, Any] | None, levels: list[int]) -> str:
    """The pipeline floor's held RSS per session at the same levels, when the run has it."""
    parts = []
    for n in levels:
        m = _memory_at(floor, n) if floor else None
        if m and m.get("per_session_held_bytes") is not None:
            parts.append(f"{n}: {_mib(m['per_session_held_bytes'])} MiB")
    return f" (pipeline floor, no TTS work: {'; '.join(parts)})" if parts else ""


def _cpu_above_floor(
    clients: dict[str, Any], n: int, ours: dict[str, float] | None, base: dict[str, float] | None
) -> Row | None:
    """The CPU target read on what a client controls: its CPU above the pipeline floor's.

    Only when the run includes the ``floor`` client (a stage that does no TTS work) at level
    ``n``. The floor is what every token frame and the audio and word frames cost in the
    pipeline, whichever client speaks; a ratio of totals cannot go below the floor's own ratio.
    """
    floor = clients.get("floor")
    lv = level_of(floor["ceiling"], n) if floor else None
    fc = lv["figures"]["cpu_per_audio_s"] if lv else None
    if not (fc and ours and base) or base["median"] <= fc["median"]:
        return None
    f, a, b = fc["median"], ours["median"], base["median"]
    r = (a - f) / (b - f)
    return (
        "CPU per audio second above the pipeline floor <= 0.6x the built-in's (a reading of "
        "the CPU target on the part a client controls; not the issue's wording)",
        f"floor {_cpu_ms(f)} ms at {n} ({f / b:.2f}x the built-in's total); above it "
        f"{_cpu_ms(a - f)} vs {_cpu_ms(b - f)} ms ({r:.2f}x)",
        r <= 0.6,
    )


def extras_targets(results: dict[str, Any]) -> list[Row]:
    """Barge-in and jitter targets of the full scale run."""
    clients = results["clients"]
    ours, base = clients["ours"], clients["builtin"]
    peers = [k for k in clients if k != "ours"]
    n_load = results["config"]["barge_in_load_sessions"]
    out: list[Row] = []
    for key, label in (("barge_in_1", "1 session"), ("barge_in_load", f"{n_load} sessions")):
        d = ours[key]["delta_s"]
        out.append(
            (
                f"After-barge-in TTFA within 15 ms of steady state, {label}",
                "n/a" if d is None else f"{d * 1000:+.0f} ms",
                None if d is None else abs(d) <= 0.015,
            )
        )
    p95, bp95 = ours["jitter"]["p95_s"], base["jitter"]["p95_s"]
    out.append(
        (
            "Jittered TTFA p95 <= 0.5x the built-in's",
            f"{_ms(p95)} vs {_ms(bp95)} ({p95 / bp95:.2f}x)",
            p95 <= 0.5 * bp95,
        )
    )
    others = {k: clients[k]["jitter"]["p95_s"] for k in peers}
    out.append(
        (
            "Jittered TTFA p95 below every peer's",
            ", ".join(f"{clients[k]['label']}: {_ms(v)}" for k, v in others.items()),
            all(p95 < v for v in others.values()),
        )
    )
    return out


def scale_targets(results: dict[str, Any]) -> list[Row]:
    """Every target the run has figures for."""
    out = ceiling_targets(results)
    if results["config"].get("extras"):
        out += extras_targets(results)
    return out


# --------------------------------------------------------------------------- sections


def machine_text(results: dict[str, Any]) -> str:
    """The machine's speed and load during the run, as one paragraph."""
    m = results["machine"]
    start, end = m["at_start"], m.get("at_end")
    per_level = m.get("per_level", [])
    steps = m["loop_steps"] / 1e6
    where = (
        f"this process and the emulator pinned together to CPU {m['pinned_cpu']}"
        if m.get("pinned_cpu") is not None
        else "no pinning"
    )
    loops = [s["loop"]["wall_s"] for s in per_level]
    loads = [s["load_average"][0] for s in per_level]
    text = (
        f"**Machine:** {m['cpus']} CPUs, {where}, Python {m['python']}. Single-thread speed (a "
        f"{steps:g}-million-step empty Python loop, wall / CPU time): "
        f"{start['loop']['wall_s']:.3f} / {start['loop']['cpu_s']:.3f} s at the start"
    )
    if end:
        text += f", {end['loop']['wall_s']:.3f} / {end['loop']['cpu_s']:.3f} s at the end"
    if loops:
        text += f", {min(loops):.3f}-{max(loops):.3f} s (wall) before the levels"
    text += f". Load average (1 / 5 / 15 min) at the start {_loads(start['load_average'])}"
    if end:
        text += f", at the end {_loads(end['load_average'])}"
    if loads:
        text += f"; 1-minute load before the levels {min(loads):.2f}-{max(loads):.2f}"
    return text + f". Run time {results['runtime_s']:.0f} s."


def _loads(la: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in la)


def ceiling_section(results: dict[str, Any]) -> list[str]:
    """The side-by-side table, every level's spread, and the memory detail."""
    clients, cfg = results["clients"], results["config"]
    keys = list(clients)
    base = clients["builtin"]["ceiling"]
    tries, max_failed = cfg["tries"], cfg["max_failed"]
    lines = ["| figure | " + " | ".join(clients[k]["label"] for k in keys) + " |"]
    lines.append("|---|" + "---|" * len(keys))

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(clients[k]) for k in keys) + " |")

    def ceiling_cell(c: dict[str, Any]) -> str:
        text = f"**{ceiling_text(c['ceiling'], cfg['levels'])}**"
        if c["ceiling"]["ceiling"] and base["ceiling"] and not base["capped"]:
            text += f" ({c['ceiling']['ceiling'] / base['ceiling']:.2f}x)"
        return text

    def failed_cell(c: dict[str, Any]) -> str:
        n = c["ceiling"]["failed_at"]
        if n is None:
            return "none"
        lv = level_of(c["ceiling"], n)
        assert lv
        return f"{n}: {lv['tries_with_gap']} of {lv['tries']}"

    def at_ceiling(key: str, fmt: Callable[[float], str]) -> Callable[[dict[str, Any]], str]:
        def cell(c: dict[str, Any]) -> str:
            lv = level_of(c["ceiling"], c["ceiling"]["ceiling"])
            return "n/a" if not lv else _spread(lv["figures"][key], fmt)

        return cell

    def tries_cell(c: dict[str, Any]) -> str:
        lv = level_of(c["ceiling"], c["ceiling"]["ceiling"])
        return "n/a" if not lv else f"{lv['tries_with_gap']} of {lv['tries']}"

    levels = ", ".join(str(n) for n in cfg["levels"])
    row(
        f"**ceiling**: highest level passed (levels {levels}; at most {max_failed} of "
        f"{tries} tries with a gap)",
        ceiling_cell,
    )
    row("first level failed: tries with a gap", failed_cell)
    row("at the ceiling: tries with a gap", tries_cell)
    row("at the ceiling: sessions with a gap", at_ceiling("sessions_with_gap", _count))
    row("at the ceiling: worst lateness (ms)", at_ceiling("worst_lateness_s", _ms_bare))
    row("at the ceiling: TTFA median (ms)", at_ceiling("ttfa_median_s", _ms_bare))
    row("at the ceiling: TTFA p95 (ms)", at_ceiling("ttfa_p95_s", _ms_bare))
    row("at the ceiling: client CPU per audio second (ms)", at_ceiling("cpu_per_audio_s", _cpu_ms))
    row("at the ceiling: client CPU use", at_ceiling("cpu_utilisation", _pct))
    row(
        "at the ceiling: server connections per session",
        at_ceiling("connections_per_session", lambda v: f"{v:.2f}"),
    )
    row(
        "at the ceiling: emulator's worst lateness (ms)",
        at_ceiling("emulator_worst_lateness_s", _ms_bare),
    )
    row(
        "RSS per session, held after speaking (MiB @ sessions)",
        lambda c: _memory_cell(c, "per_session_held_bytes"),
    )
    row(
        "RSS per session, peak while speaking (MiB @ sessions)",
        lambda c: _memory_cell(c, "per_session_peak_bytes"),
    )
    row(
        "RSS per session, held, after the allocator returns free pages (malloc_trim)",
        lambda c: _memory_cell(c, "per_session_trimmed_bytes"),
    )
    row(
        "process RSS before the sessions (imports + 1 warm session, MiB)",
        lambda c: _memory_cell(c, "baseline_bytes"),
    )
    lines.append("")
    lines.append(
        f"Cells over tries: median (best-worst) of the {tries} tries at that level. A session "
        "has a **gap** when an audio frame leaves its service more than 100 ms after real-time "
        "playback, started at the session's first frame, needs it; **worst lateness** is the "
        "largest such delay over the level's sessions. CPU: `getrusage` of the benchmark "
        "process (pipelines, clients, recorders, token streamers) over the speaking phase, per "
        "second of audio delivered. **RSS per session**: in a fresh process per client and "
        "level, after one warm session has spoken, (RSS - baseline) / N once N more sessions "
        "have each spoken the sentence and sit idle (held), and at the peak while they spoke "
        "(see `benchmarks/memory.py`)."
    )
    lines.append("")
    lines.append("## Every level")
    lines.append("")
    lines.append(
        "| N | client | tries with a gap | passed | sessions with a gap | worst lateness (ms) "
        "| TTFA median (ms) | TTFA p95 (ms) | CPU ms per audio s | CPU use | emulator's worst "
        "lateness (ms) | 1-min load |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in cfg["levels"]:
        for k in keys:
            lv = level_of(clients[k]["ceiling"], n)
            if not lv:
                continue
            f = lv["figures"]
            loads = [r["load_average"][0] for r in lv["runs"]]
            lines.append(
                f"| {n} | {clients[k]['label']} | {lv['tries_with_gap']} of {lv['tries']} | "
                f"{'yes' if lv['passed'] else '**no**'} | "
                f"{_spread(f['sessions_with_gap'], _count)} | "
                f"{_spread(f['worst_lateness_s'], _ms_bare)} | "
                f"{_spread(f['ttfa_median_s'], _ms_bare)} | {_spread(f['ttfa_p95_s'], _ms_bare)} | "
                f"{_spread(f['cpu_per_audio_s'], _cpu_ms)} | {_spread(f['cpu_utilisation'], _pct)} | "
                f"{_spread(f['emulator_worst_lateness_s'], _ms_bare)} | "
                f"{min(loads):.2f}-{max(loads):.2f} |"
            )
    lines.append("")
    return lines


def extras_section(results: dict[str, Any]) -> list[str]:
    """Jittered TTFA and barge-ins under load, side by side."""
    clients, cfg = results["clients"], results["config"]
    keys = list(clients)
    n_load = cfg["barge_in_load_sessions"]
    bp = clients["builtin"]["jitter"]
    lines = ["## TTFA under network jitter, and barge-ins under load", ""]
    lines.append("| figure | " + " | ".join(clients[k]["label"] for k in keys) + " |")
    lines.append("|---|" + "---|" * len(keys))

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(clients[k]) for k in keys) + " |")

    row(
        "TTFA under jitter, p50 / p95 / p99",
        lambda c: (
            f"{_ms(c['jitter']['p50_s'])[:-3]} / {_ms(c['jitter']['p95_s'])[:-3]} / "
            f"{_ms(c['jitter']['p99_s'])}"
        ),
    )
    row("  p95 vs built-in", lambda c: f"{c['jitter']['p95_s'] / bp['p95_s']:.2f}x")
    row(
        "  p95 of each seed alone",
        lambda c: " / ".join(_ms(x)[:-3] for x in c["jitter"].get("p95_per_seed_s", [])) + " ms",
    )
    for key, label in (("barge_in_1", "1 session"), ("barge_in_load", f"{n_load} sessions")):
        row(
            f"TTFA after a barge-in vs. steady state, {label}",
            lambda c, key=key: (
                f"{_ms(c[key]['after_ttfa_s'])} vs {_ms(c[key]['steady_ttfa_s'])} "
                f"(**{(c[key]['delta_s'] or 0) * 1000:+.0f} ms**)"
            ),
        )
    row(
        f"server connections per session, {n_load} sessions with a barge-in each",
        lambda c: f"{c['barge_in_load']['connections_per_session']:.2f}",
    )
    lines.append("")
    lines.append(
        f"Barge-ins under load: {n_load} sessions each interrupt one answer after 1 s of its "
        f"audio and start the next 0.3 s later, starts spread over "
        f"{cfg['barge_in_load_spread_s']:g} s ({n_load / max(cfg['barge_in_load_spread_s'], 1e-9):.0f} "
        "barge-ins a second); steady state is the median TTFA of the interrupted answers (each "
        "on the socket its session already had), after is the median of the answers that "
        "followed. Every barge-in closes its answer's socket (the only way to stop Gradium), "
        "so that run costs a socket per barge-in by design."
    )
    lines.append("")
    return lines


def tries_section(results: dict[str, Any]) -> list[str]:
    """Every try of every level, and every memory measurement."""
    clients = results["clients"]
    lines = ["## Every try", ""]
    lines.append(
        "| client | N | try | sessions with gap | worst lateness | emulator worst | "
        "conn/session | TTFA median | TTFA p95 | CPU use | CPU ms per audio s | 1-min load |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, c in clients.items():
        for lv in c["ceiling"]["levels"]:
            for r in lv["runs"]:
                lines.append(
                    f"| {c['label']} | {r['sessions']} | {r['attempt']} | "
                    f"{r['sessions_with_gap']} | {_ms(r['worst_lateness_s'])} | "
                    f"{_ms(r['emulator_worst_lateness_s'])} | "
                    f"{r['connections_per_session']:.2f} | {_ms(r['ttfa_median_s'])} | "
                    f"{_ms(r['ttfa_p95_s'])} | {_num((r['cpu_utilisation'] or 0) * 100, 0)}% | "
                    f"{_num((r['cpu_per_audio_s'] or 0) * 1000, 2)} | "
                    f"{r['load_average'][0]:.2f} |"
                )
    lines.append("")
    lines.append("## Memory")
    lines.append("")
    lines.append(
        "| client | N | process RSS before (MiB) | per session after start | per session "
        "held after speaking | per session at the peak | note |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for c in clients.values():
        for m in c.get("memory", []):
            if "error" in m:
                lines.append(f"| {c['label']} | {m['sessions']} | | | | | failed: {m['error']} |")
                continue
            note = "; ".join(m["errors"]) or ("" if m["peak_reset"] else "peak not reset")
            lines.append(
                f"| {c['label']} | {m['sessions']} | {_mib(m['baseline_bytes'])} | "
                f"{_mib(m['per_session_started_bytes'])} | {_mib(m['per_session_held_bytes'])} | "
                f"{_mib(m['per_session_peak_bytes'])} | {note} |"
            )
    lines.append("")
    return lines


def render_scale(results: dict[str, Any]) -> str:
    """The scale report as markdown."""
    cfg = results["config"]
    lm = results["latency_model"]
    kind = "starved configuration" if cfg["starved"] else "normal configuration"
    title = f"# pipecat-gradium scale benchmark: {kind}" + (" (QUICK)" if results["quick"] else "")
    lines = [title, ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    model = (
        f"Emulator in its own process: handshake {lm['handshake_s'] * 1000:.0f} ms, setup "
        f"{lm['setup_s'] * 1000:.0f} ms, model delay {lm['model_delay_s'] * 1000:.0f} ms, "
        f"look-ahead {lm['lookahead_words']} words; cached-word voice and no permessage-deflate "
        "(so its own sends stay on time). Load runs: N pipelines in this process, each speaking "
        "one 20-word sentence at 48 kHz (about 7 s of audio), LLM streams at 33 tokens/s "
        "starting within 1 s of each other, generation 2x real time; `gc.freeze()` after the "
        "sessions start, as a host would. At each level every client runs "
        f"{cfg['tries']} tries, the clients taking turns within each try."
    )
    if cfg["starved"]:
        model += (
            " **Starved:** the benchmark process and the emulator are pinned together to one "
            "CPU, so the clients' event loop shares a single core with the server's work (and "
            "with whatever else the machine runs on that core)."
        )
    if cfg.get("extras"):
        j = results["jitter"]
        model += (
            f" Jitter runs: generation 16x, {j['net_delay_s'] * 1000:.0f} ms ± "
            f"{j['net_jitter_s'] * 1000:.0f} ms per message each way (uniform), "
            f"{j['stall_probability'] * 100:.0f} % of messages held {j['stall_s'] * 1000:.0f} ms "
            f"more, in order; handshake ± {j['handshake_jitter_s'] * 1000:.0f} ms; the answers "
            f"of seeds {', '.join(str(x) for x in cfg['jitter_seeds'])} pooled."
        )
    lines += [model, "", machine_text(results), ""]
    lines += ceiling_section(results)
    if cfg.get("extras"):
        lines += extras_section(results)
    lines += _targets_table("## Targets", scale_targets(results))
    lines += tries_section(results)
    return "\n".join(lines)
