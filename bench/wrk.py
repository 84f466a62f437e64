"""wrk as the load generator: a generated Lua script per run, results read from its `done`.

wrk is written in C and drives thousands of requests a second from one thread, so on a
2-core machine it leaves the gateway nearly a whole core; a Python client would take a
large share of it and measure itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["available", "lua_script", "run"]

_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,' ..
    '"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    level = "=" * 3
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def _lua_headers(headers: dict[str, str]) -> str:
    items = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
    return "{ " + items + " }"


def lua_script(spec: dict[str, Any]) -> str:
    """The Lua for a load spec (the same shape bench.client takes)."""
    path = "/" + spec["url"].split("/", 3)[3]
    subset = spec.get("subset")
    if subset is None:
        requests = spec["requests"]
        entries = ",\n  ".join(
            f"wrk.format('POST', {_lua_string(path)}, {_lua_headers(r['headers'])}, "
            f"{_lua_string(r['body'])})"
            for r in requests
        )
        return (
            "local formatted\nlocal n = 0\n"
            f"function init(args)\n  formatted = {{\n  {entries}\n  }}\nend\n"
            "function request()\n  n = n + 1\n"
            "  return formatted[(n % #formatted) + 1]\nend\n" + _DONE
        )
    # Random subsets: a partial Fisher-Yates shuffle of the pool before each request.
    prefix = json.dumps({"query": subset["template"], "variables": {"ids": []}})
    head, tail = prefix[: prefix.rindex("[]") + 1], prefix[prefix.rindex("[]") + 1 :]
    pool = ", ".join(_lua_string(json.dumps(i)) for i in subset["pool"])
    return (
        f"local pool = {{ {pool} }}\n"
        f"local size = {int(subset['size'])}\n"
        f"local head, tail = {_lua_string(head)}, {_lua_string(tail)}\n"
        f"local headers = {_lua_headers(subset['headers'])}\n"
        "local threads = 0\n"
        "function setup(thread) threads = threads + 1; thread:set('seed', threads) end\n"
        "function init(args) math.randomseed(os.time() * 1000 + (seed or 0)) end\n"
        "local picked = {}\n"
        "function request()\n"
        "  for i = 1, size do\n"
        "    local j = math.random(i, #pool)\n"
        "    pool[i], pool[j] = pool[j], pool[i]\n"
        "    picked[i] = pool[i]\n"
        "  end\n"
        f"  return wrk.format('POST', {_lua_string(path)}, headers,\n"
        "    head .. table.concat(picked, ',') .. tail)\n"
        "end\n" + _DONE
    )


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run wrk for spec["duration"] seconds at spec["concurrency"] connections, one thread."""
    with tempfile.TemporaryDirectory(prefix="pg-bench-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(lua_script(spec))
        completed = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{spec['concurrency']}",
                f"-d{max(1, round(spec['duration']))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                spec["url"],
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    line = next((x for x in completed.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    elapsed = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    done = raw["requests"] > 0  # none completed: wrk reports 0 latencies, which would lie
    return {
        "requests": raw["requests"],
        "elapsed": elapsed,
        "rps": raw["requests"] / elapsed if elapsed else 0.0,
        "p50_ms": raw["p50_us"] / 1000 if done else None,
        "p99_ms": raw["p99_us"] / 1000 if done else None,
        "mean_ms": raw["mean_us"] / 1000 if done else None,
        "errors": errors,
        "first_errors": [f"wrk errors: {raw}"] if errors else [],
    }
