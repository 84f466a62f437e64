"""The scale section: what each request costs Redis, and the capacity model built from it.

Redis's own counters are read before and after each row (every primary of a cluster):
`INFO commandstats` (calls per command), `INFO stats` (bytes in and out: clients, and
replicas apart; the cluster bus is not counted) and `INFO cpu`
(the server's CPU seconds). Divided by the requests the gateway answered, they are the
row's Redis operations, bytes and Redis CPU per request. The figures are only clean on a
Redis of the benchmark's own (`--redis private` or `cluster`, the default when REDIS_URL is
unset): anything else talking to that Redis is counted too.

Cold GraphQL rows empty the cache between requests on the same Redis, so their Redis
figures would include the flush: the scale section measures misses instead as `cold-distinct`,
portal-home pages of customers never asked before, sent without any flush.

The capacity model takes a hit (portal-home warm, 16 connections) and a miss
(portal-home cold-distinct) and mixes them at HIT_RATE.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from gateway.redis_client import cluster_url
from gateway.settings import DEFAULT_RATE_LIMITS

__all__ = ["HIT_RATE", "RedisMeter", "capacity", "per_request", "render", "summed"]

# The share of portal requests the capacity model answers from the whole-response cache.
HIT_RATE = 0.9
# What a planner fills a core to: headroom for bursts, GC and failover.
UTILISATION = 0.6
TARGETS = (1_000, 10_000, 100_000)
# The providers' documented limits per account, as the gateway's defaults hold them
# (RATE_LIMIT_<PROVIDER>): replicas do not add to them.
PROVIDER_LIMITS = {p: calls / per for p, (calls, per) in DEFAULT_RATE_LIMITS.items()}


class RedisMeter:
    """Reads the counters of every primary behind a REDIS_URL (one node, or a cluster)."""

    def __init__(self, url: str) -> None:
        seed = cluster_url(url)
        if seed is None:
            self._nodes = [redis.Redis.from_url(url)]
        else:
            cluster = redis.RedisCluster.from_url(seed)
            try:
                self._nodes = [
                    redis.Redis(host=node.host, port=node.port) for node in cluster.get_primaries()
                ]
            finally:
                cluster.close()

    def snapshot(self) -> dict[str, Any]:
        calls: dict[str, int] = {}
        bytes_in = bytes_out = repl = 0
        cpu = 0.0
        for node in self._nodes:
            for name, stats in node.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                calls[command] = calls.get(command, 0) + int(stats["calls"])
            info = node.info("stats")
            bytes_in += int(info["total_net_input_bytes"])
            bytes_out += int(info["total_net_output_bytes"])
            repl += int(info.get("total_net_repl_output_bytes", 0))
            used = node.info("cpu")
            cpu += float(used["used_cpu_user"]) + float(used["used_cpu_sys"])
        return {"calls": calls, "in": bytes_in, "out": bytes_out, "repl": repl, "cpu": cpu}

    @property
    def primaries(self) -> int:
        return len(self._nodes)

    def close(self) -> None:
        for node in self._nodes:
            node.close()


def summed(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Several runs' snapshot pairs as one pair: zero, and the runs' differences added."""
    zero: dict[str, Any] = {"calls": {}, "in": 0, "out": 0, "repl": 0, "cpu": 0.0}
    total: dict[str, Any] = {"calls": {}, "in": 0, "out": 0, "repl": 0, "cpu": 0.0}
    for b, a in zip(before, after, strict=True):
        for name, n in a["calls"].items():
            total["calls"][name] = total["calls"].get(name, 0) + n - b["calls"].get(name, 0)
        for field in ("in", "out", "repl", "cpu"):
            total[field] += a[field] - b[field]
    return zero, total


def per_request(before: dict[str, Any], after: dict[str, Any], served: int) -> dict[str, Any]:
    """Redis operations, bytes and CPU per answered request between two snapshots; the
    meter's own INFO calls are left out."""
    if not served:
        return {}
    commands = {
        name: (n - before["calls"].get(name, 0)) / served
        for name, n in sorted(after["calls"].items())
        if name != "info" and n - before["calls"].get(name, 0) > 0
    }
    return {
        "ops": sum(commands.values()),
        "bytes_in": (after["in"] - before["in"]) / served,
        # Redis counts what it sends its replicas in both totals: clients get the rest
        "bytes_out": (after["out"] - before["out"] - after["repl"] + before["repl"]) / served,
        "bytes_to_replicas": (after["repl"] - before["repl"]) / served,
        "cpu_us": (after["cpu"] - before["cpu"]) / served * 1e6,
        "commands": commands,
    }


def _row(rows: list[dict[str, Any]], scenario: str, state: str, c: int) -> dict[str, Any] | None:
    for row in rows:
        if (row["scenario"], row["mode"], row["state"], row["concurrency"]) == (
            scenario,
            "default",
            state,
            c,
        ) and row.get("redis"):
            return row
    return None


def capacity(rows: list[dict[str, Any]], primaries: int) -> dict[str, Any] | None:
    """Replicas' cores, Redis primaries and provider calls for each target rate, from the
    measured portal-home hit and miss rows at HIT_RATE; None without both rows."""
    hit = _row(rows, "portal-home", "warm", 16)
    miss = _row(rows, "portal-home", "cold-distinct", 8)
    if hit is None or miss is None or not hit["cpu_ms_per_request"]:
        return None

    def mixed(value: float, other: float) -> float:
        return HIT_RATE * value + (1 - HIT_RATE) * other

    cpu_ms = mixed(hit["cpu_ms_per_request"], miss["cpu_ms_per_request"])
    ops = mixed(hit["redis"]["ops"], miss["redis"]["ops"])
    redis_cpu_us = mixed(hit["redis"]["cpu_us"], miss["redis"]["cpu_us"])
    net = mixed(
        hit["redis"]["bytes_in"] + hit["redis"]["bytes_out"],
        miss["redis"]["bytes_in"] + miss["redis"]["bytes_out"],
    )
    calls = {p: (1 - HIT_RATE) * n for p, n in miss["calls_per_query"].items()}
    # the request rate at which each resource is full, for one unit of it
    per_core = UTILISATION * 1000 / cpu_ms
    per_primary = UTILISATION * 1e6 / redis_cpu_us if redis_cpu_us else math.inf
    provider_ceiling = {
        p: PROVIDER_LIMITS[p] / n for p, n in calls.items() if n and p in PROVIDER_LIMITS
    }
    plans = [
        {
            "rate": rate,
            "gateway_cores": math.ceil(rate / per_core),
            "redis_primaries": max(1, math.ceil(rate / per_primary)),
            "redis_ops_per_s": rate * ops,
            "redis_mb_per_s": rate * net / 1e6,
            "provider_calls_per_s": {p: rate * n for p, n in calls.items()},
        }
        for rate in TARGETS
    ]
    first = min(provider_ceiling.items(), key=lambda item: item[1], default=None)
    return {
        "hit_rate": HIT_RATE,
        "utilisation": UTILISATION,
        "measured_on_primaries": primaries,
        "inputs": {
            "gateway_cpu_ms": cpu_ms,
            "redis_ops": ops,
            "redis_bytes": net,
            "redis_cpu_us": redis_cpu_us,
            "provider_calls": calls,
        },
        "requests_per_core": per_core,
        "requests_per_primary": per_primary,
        "provider_ceiling": provider_ceiling,
        "saturates_first": first[0] if first else None,
        "plans": plans,
    }


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def render(rows: list[dict[str, Any]], model: dict[str, Any] | None) -> list[str]:
    """The scale section of the printed table."""
    measured = [r for r in rows if r.get("redis")]
    if not measured:
        return []
    lines = ["scale: Redis per answered request (INFO commandstats/stats/cpu, all primaries)"]
    for row in measured:
        cost = row["redis"]
        top = sorted(cost["commands"].items(), key=lambda item: -item[1])[:4]
        per_core = 1000 / row["cpu_ms_per_request"] if row["cpu_ms_per_request"] else 0.0
        lines.append(
            f"  {row['scenario']} {row['state']} {row['mode']} c={row['concurrency']}: "
            f"{cost['ops']:.2f} ops, {_num(cost['bytes_in'])} B in, {_num(cost['bytes_out'])} B "
            f"out, {_num(cost.get('bytes_to_replicas', 0.0))} B to replicas, "
            f"{cost['cpu_us']:.0f} us Redis CPU; {per_core:.0f} req/s per gateway core; "
            + ", ".join(f"{name} {n:.2f}" for name, n in top)
        )
    if model is None:
        return lines
    inputs = model["inputs"]
    lines += [
        "",
        f"capacity model at {model['hit_rate']:.0%} response-cache hits, cores and Redis filled "
        f"to {model['utilisation']:.0%} (portal-home warm c=16 as the hit, cold-distinct as "
        f"the miss): {inputs['gateway_cpu_ms']:.2f} ms gateway CPU, {inputs['redis_ops']:.2f} "
        f"Redis ops, {_num(inputs['redis_bytes'])} B, {inputs['redis_cpu_us']:.0f} us Redis "
        "CPU per request",
    ]
    for plan in model["plans"]:
        providers = ", ".join(f"{p} {n:,.0f}/s" for p, n in plan["provider_calls_per_s"].items())
        lines.append(
            f"  {plan['rate']:>7,} req/s: {plan['gateway_cores']} gateway cores, "
            f"{plan['redis_primaries']} Redis primaries ({plan['redis_ops_per_s']:,.0f} ops/s, "
            f"{plan['redis_mb_per_s']:.1f} MB/s); provider calls {providers}"
        )
    ceilings = ", ".join(f"{p} at {n:,.0f} req/s" for p, n in model["provider_ceiling"].items())
    lines.append(
        f"  one core serves {model['requests_per_core']:,.0f} req/s, one Redis primary "
        f"{model['requests_per_primary']:,.0f} req/s; the providers' account limits are reached "
        f"first: {ceilings}"
    )
    return lines
