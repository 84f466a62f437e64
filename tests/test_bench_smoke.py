"""`make bench` end to end on a few requests, so the harness cannot rot (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.runner import main


def test_bench_counts_each_querys_provider_calls_and_writes_the_table(
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    output = tmp_path / "latest.json"
    main(
        [
            "--providers=sandbox",
            "--scenarios=portal-home",
            "--modes=default",
            "--latency=1",
            "--duration=1",
            "--repeat=1",
            "--cold-requests=3",
            "--no-profile",
            f"--output={output}",
        ]
    )

    result = json.loads(output.read_text())
    rows = {(r["scenario"], r["state"], r["concurrency"]): r for r in result["rows"]}
    assert set(rows) == {
        ("portal-home", "cold", 1),
        ("portal-home", "warm", 1),
        ("portal-home", "warm", 16),
        ("portal-home", "cold-distinct", 8),  # the scale section's miss
    }
    for row in rows.values():
        assert row["errors"] == 0
        assert row["served"] > 0
        assert row["peak_rss_mb"] > 0
    # a cold page is one call per provider; a warm one is answered from the caches
    assert rows["portal-home", "cold", 1]["calls_per_query"] == {
        "crm": 1.0,
        "billing": 1.0,
        "helpdesk": 1.0,
        "files": 1.0,
    }
    assert sum(rows["portal-home", "warm", 16]["calls_per_query"].values()) == 0
    # the scale section: Redis's counters per request (a hit reads and counts: 2 INCR at
    # least), none for a cold row (the flush runs on the same Redis), and the model
    hit = rows["portal-home", "warm", 16]["redis"]
    assert hit["ops"] >= 3
    assert hit["commands"]["incr"] >= 2
    assert rows["portal-home", "cold", 1]["redis"] is None
    miss = rows["portal-home", "cold-distinct", 8]
    assert miss["calls_per_query"]["billing"] == 1.0
    assert miss["redis"]["ops"] > hit["ops"]  # a miss writes what it fetched
    plans = result["capacity"]["plans"]
    assert [p["rate"] for p in plans] == [1_000, 10_000, 100_000]
    assert plans[0]["gateway_cores"] <= plans[1]["gateway_cores"] <= plans[2]["gateway_cores"]
    printed = capsys.readouterr().out
    assert "portal-home" in printed
    assert "capacity model at 90% response-cache hits" in printed
    # CPU per provider call: every shape at both concurrencies, through the real client
    calls = result["provider_calls"]["rows"]
    assert {(r["shape"], r["concurrency"]) for r in calls} == {
        (shape, c) for shape in ("same-url", "distinct-urls", "params") for c in (1, 16)
    }
    assert all(0 < r["cpu_us_min"] <= r["cpu_us_median"] for r in calls)
    assert "CPU per provider call" in printed
