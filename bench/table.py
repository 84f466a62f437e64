"""The printed table, the ratios on/off and the target checks."""

from __future__ import annotations

from typing import Any

from bench import provider_calls, scale

__all__ = ["fmt_calls", "render"]


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _calls_value(value: float) -> str:
    if abs(value - round(value)) < 0.005:
        return str(round(value))
    return f"{value:.2f}"


def fmt_calls(per_query: dict[str, float], providers: tuple[str, ...]) -> str:
    return "/".join(_calls_value(per_query.get(p, 0.0)) for p in providers)


def _spread(row: dict[str, Any]) -> str:
    text = _range(row)
    if row.get("errors"):
        text += f", {row['errors']} errors"
    return text


def _range(row: dict[str, Any]) -> str:
    runs = row["runs"]
    if len(runs) < 2:
        return "1 run"
    if row["concurrency"] == 1:
        values = [r["p50_ms"] for r in runs if r["p50_ms"] is not None]
        if not values:
            return f"({len(runs)})"
        return f"p50 {_num(min(values), 2)}-{_num(max(values), 2)} ({len(runs)})"
    values = [r["rps"] for r in runs]
    return f"rps {_num(min(values), 0)}-{_num(max(values), 0)} ({len(runs)})"


def _machine(machine: dict[str, Any] | None) -> list[str]:
    """The machine's yardsticks (bench/machine.py) at the start and the end of the run."""
    if not machine:
        return []
    taken = [
        f"{when} {m['python_loop_ms']} ms / {m['redis_ping_us']} us" for when, m in machine.items()
    ]
    return [f"machine speed (python loop of 2M additions / redis PING): {', '.join(taken)}"]


def render(result: dict[str, Any]) -> str:
    meta = result["meta"]
    providers = tuple(meta["provider_names"])
    header = [
        "scenario",
        "state",
        "mode",
        "c",
        "calls/q " + "/".join(providers),
        "p50 ms",
        "p99 ms",
        "req/s",
        "spread (best of)",
        "cpu ms/q",
        "RSS MB",
    ]
    lines = [header]
    notes: list[str] = []

    def note(text: str) -> str:
        notes.append(text if len(text) <= 300 else text[:297] + "...")
        return f"[{len(notes)}]"

    for row in result["rows"]:
        if row.get("skipped"):
            lines.append(
                [row["scenario"], row["state"], row["mode"], str(row["concurrency"]),
                 "-", "-", "-", "-", note(row["skipped"]), "-", "-"]
            )  # fmt: skip
            continue
        marks = " ".join(note(text) for text in row.get("notes", []))
        lines.append(
            [
                row["scenario"],
                row["state"],
                row["mode"],
                str(row["concurrency"]),
                fmt_calls(row["calls_per_query"], providers),
                _num(row["p50_ms"], 2),
                _num(row["p99_ms"], 2),
                _num(row["rps"], 0),
                _spread(row) + (f" {marks}" if marks else ""),
                _num(row["cpu_ms_per_request"], 2),
                _num(row["peak_rss_mb"], 0),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {3, 5, 6, 7, 9, 10}
    out = []
    for index, line in enumerate(lines):
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    text = [
        f"portal-gateway benchmark: providers={meta['providers']} latency={meta['latency_ms']} ms"
        f" load={meta['loadgen']} warm runs {meta['repeat']} x {meta['duration_s']} s,"
        f" cold {meta['cold_requests']} requests x {meta['repeat']}"
        f" ({meta['cpu_count']} cores, {meta['started_at']})",
        *_machine(meta.get("machine")),
        "",
        *out,
    ]
    if notes:
        text += ["", *(f"[{i}] {line}" for i, line in enumerate(notes, 1))]
    if result.get("ratios"):
        text += ["", "gain with batching + caches on vs GATEWAY_BATCHING=false (same run):"]
        text += [f"  {line}" for line in result["ratios"]]
    if result.get("targets"):
        text += ["", "targets (issue 9, issue 11; DESIGN section 12 peer beside):"]
        text += [f"  [{t['status']:>7}] {t['target']}: {t['measured']}" for t in result["targets"]]
    text += ["", *scale.render(result["rows"], result.get("capacity"))]
    if result.get("provider_calls"):
        text += ["", *provider_calls.render(result["provider_calls"])]
    if result.get("profiles"):
        for profile in result["profiles"]:
            text += ["", f"profile: {profile['title']}"]
            text += [f"  {line}" for line in profile["summary"]]
    text += [
        "",
        "p50/p99/req/s are the best of the runs (highest req/s); spread is the range over runs."
        " Other test suites may share this machine: compare rows of one run, not across runs.",
    ]
    return "\n".join(text)
