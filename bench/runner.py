"""Runs the benchmark: providers, then for each mode a fresh gateway and every scenario's rows.

See bench/README.md for the method. No timing is asserted anywhere: this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import provider_calls, scale, wrk
from bench import pyspy as profiling
from bench.gateway_process import GatewayProcess
from bench.machine import speed as measure_machine
from bench.ports import free_port
from bench.providers import ProviderSet, SandboxProviders
from bench.redis_db import bench_redis, delete_prefix
from bench.scenarios import (
    MIXED_SUBSET,
    MODES,
    PORTAL_HOME,
    SCENARIOS,
    STAFF_PAGE,
    Row,
    rows_for,
    signed_stripe_events,
)
from bench.table import fmt_calls, render
from bench.targets import ratios, targets
from gateway.redis_client import blocking_client

__all__ = ["Options", "main", "run"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "latest.json"
WEBHOOK_SECRET = "whsec_bench_" + "0" * 24
WEBHOOK_EVENTS = 1000
STAFF_CHUNK = 50  # customers per priming request (the query cost limit allows 64)
COLD_DISTINCT = 40  # customers of the cold-distinct row (the sandbox has 60, the fakes 200)
# Rows profiled with py-spy: warm portal-home (the path issues 9 and 11 set targets for) with
# and without the response cache; cold portal-home (target 9(c)) and cold staff-50 (the
# most CPU one query costs).
PROFILED = {
    ("portal-home", "default"): ("warm", "cold"),
    ("portal-home", "rc-off"): ("warm",),
    ("staff-50", "default"): ("cold",),
}


class RowFailed(Exception):
    """A row could not be measured (the gateway refused its check request)."""


class Options(argparse.Namespace):
    providers: str = "auto"
    latency: float = 40.0
    duration: float = 5.0
    repeat: int = 3
    cold_requests: int = 10
    webhook_events: int = WEBHOOK_EVENTS
    scenarios: list[str]
    modes: list[str]
    loadgen: str = "auto"
    output: Path = DEFAULT_OUTPUT
    logs: Path | None = None
    profile: bool = True
    provider_calls: bool = True
    quick: bool = False
    redis: str = "auto"


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--providers",
        choices=["auto", "sandbox", "fakes"],
        default="auto",
        help="fake provider servers (auto: when they are available) or the in-process sandbox",
    )
    parser.add_argument("--latency", type=float, default=40.0, help="ms per provider call")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per warm run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (best reported)")
    parser.add_argument("--cold-requests", type=int, default=10, help="requests per cold run")
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), metavar="NAME"
    )
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument(
        "--webhook-events", type=int, default=WEBHOOK_EVENTS, help="events per webhook burst"
    )
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--logs", type=Path, help="keep the gateway's and the fakes' logs in this directory"
    )
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the py-spy profiles"
    )
    parser.add_argument(
        "--no-provider-calls",
        dest="provider_calls",
        action="store_false",
        help="skip the CPU per provider call section (bench/provider_calls.py)",
    )
    parser.add_argument(
        "--redis",
        choices=["auto", "cluster"],
        default="auto",
        help="auto: REDIS_URL, else a redis-server of the benchmark's own; cluster: a "
        "three-master Redis Cluster of its own (REDIS_URL=redis+cluster://...)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 s runs, 1 repeat, 5 cold requests (a smoke run)"
    )
    options = parser.parse_args(argv, namespace=Options())
    if options.quick:
        options.duration, options.repeat, options.cold_requests = 1.0, 1, 5
    return options


def _fakes_available() -> bool:
    from bench import fakes_providers

    return fakes_providers.available()


def build_providers(options: Options) -> ProviderSet:
    choice = options.providers
    if choice == "auto":
        choice = "fakes" if _fakes_available() else "sandbox"
    if choice == "fakes":
        from bench.fakes_providers import FakeProviders

        return FakeProviders(options.latency)
    return SandboxProviders(options.latency)


def _python_load(spec: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.client"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout)
    result["loadgen"] = "python"
    return result


class Bench:
    """One benchmark run: the providers are up; gateways come and go per mode."""

    def __init__(
        self,
        options: Options,
        providers: ProviderSet,
        redis_url: str,
        workdir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.options = options
        self.providers = providers
        self.redis_url = redis_url
        self.redis = blocking_client(redis_url)
        self.meter = scale.RedisMeter(redis_url)
        self.workdir = workdir
        self.log = log
        self.secret = secrets.token_urlsafe(32)
        self.use_wrk = options.loadgen == "wrk" or (options.loadgen == "auto" and wrk.available())
        if options.loadgen == "wrk" and not wrk.available():
            raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install wrk)")
        self.rows: list[dict[str, Any]] = []
        self.profiles: list[dict[str, Any]] = []
        self.prefix = ""
        self.gateway: GatewayProcess | None = None

    # -- tokens and request specs ------------------------------------------------------

    def token(self, customer_id: str | None, roles: list[str] | None = None) -> str:
        from gateway.auth import mint_dev_token

        return mint_dev_token(self.secret, customer_id, roles, ttl=12 * 3600)

    def _headers(self, token: str) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def portal_request(self, customer_id: str) -> dict[str, Any]:
        return {
            "body": json.dumps({"query": PORTAL_HOME, "operationName": "PortalHome"}),
            "headers": self._headers(self.token(customer_id)),
        }

    def staff_request(self, ids: list[str]) -> dict[str, Any]:
        return {
            "body": json.dumps({"query": STAFF_PAGE, "variables": {"ids": ids}}),
            "headers": self._headers(self.token(None, ["staff"])),
        }

    def graphql_spec(self, scenario: str) -> dict[str, Any]:
        dataset = self.providers.dataset
        assert self.gateway is not None
        url = self.gateway.url + "/graphql"
        if scenario == "portal-home":
            return {"url": url, "requests": [self.portal_request(dataset.portal_customer)]}
        if scenario == "staff-50":
            return {"url": url, "requests": [self.staff_request(dataset.staff_customers)]}
        if scenario == "mixed":
            return {
                "url": url,
                "subset": {
                    "template": STAFF_PAGE,
                    "pool": dataset.mixed_pool,
                    "size": MIXED_SUBSET,
                    "headers": self._headers(self.token(None, ["staff"])),
                },
            }
        raise ValueError(scenario)

    # -- checks and priming --------------------------------------------------------------

    def _post(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.gateway is not None
        response = httpx.post(
            self.gateway.url + "/graphql",
            content=request["body"],
            headers=request["headers"],
            timeout=120,
        )
        body: dict[str, Any] = response.json()
        if response.status_code != 200 or "errors" in body:
            raise RowFailed(f"the check request answered {_first_error(response)}")
        return body

    def check_and_prime(self, scenario: str) -> None:
        """One real request per scenario, its answer checked; the caches filled on the way."""
        dataset = self.providers.dataset
        if scenario == "portal-home":
            me = self._post(self.portal_request(dataset.portal_customer))["data"]["me"]
            sizes = [len(me[k]["edges"]) for k in ("invoices", "tickets", "files")]
            if sizes != [10, 10, 10]:
                raise RowFailed(f"portal-home: expected 10 of each, got {sizes}")
        elif scenario == "staff-50":
            customers = self._post(self.staff_request(dataset.staff_customers))["data"]["customers"]
            if len(customers) != 50 or any(
                c is None or len(c["invoices"]["edges"]) != 5 or len(c["tickets"]["edges"]) != 5
                for c in customers
            ):
                raise RowFailed("staff-50: expected 50 customers with 5 invoices, 5 tickets")
        elif scenario == "mixed":
            pool = dataset.mixed_pool
            for start in range(0, len(pool), STAFF_CHUNK):
                self._post(self.staff_request(pool[start : start + STAFF_CHUNK]))

    def prime_portal_pages(self, customers: list[str]) -> None:
        """Cache the portal-home page of each customer (10 at a time)."""
        assert self.gateway is not None
        url = self.gateway.url + "/graphql"

        async def prime() -> None:
            limit = asyncio.Semaphore(10)
            async with httpx.AsyncClient(timeout=120) as client:

                async def one(customer_id: str) -> None:
                    request = self.portal_request(customer_id)
                    async with limit:
                        response = await client.post(
                            url, content=request["body"], headers=request["headers"]
                        )
                    if response.status_code != 200 or "errors" in response.json():
                        raise RowFailed(f"priming {customer_id}: {_first_error(response)}")

                await asyncio.gather(*(one(c) for c in customers))

        asyncio.run(prime())

    # -- measuring -----------------------------------------------------------------------

    def _served(self, webhooks: bool) -> int:
        """Requests the gateway has answered so far (its own counters on /metrics)."""
        assert self.gateway is not None
        text = httpx.get(self.gateway.url + "/metrics", timeout=10).text
        name = "gateway_webhooks_total" if webhooks else "gateway_requests_total"
        total = 0.0
        for match in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
            if webhooks or 'endpoint="graphql"' in match[1]:
                total += float(match[2])
        return int(total)

    def _quiet(self, webhooks: bool, window: float) -> int:
        """Wait until requests the load generator gave up on have finished; answers _served."""
        served = self._served(webhooks)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(window)
            now = self._served(webhooks)
            if now == served:
                return now
            served = now
        return served

    def _load(self, spec: dict[str, Any]) -> dict[str, Any]:
        python_only = spec.get("flush") or spec.get("count") or not self.use_wrk
        if python_only:
            return _python_load(spec)
        result = wrk.run(spec)
        result["loadgen"] = "wrk"
        return result

    def measure(self, row: Row, runs: list[Callable[[], dict[str, Any]]]) -> dict[str, Any]:
        """Each run primes what it needs and returns its load spec; measured one by one.

        Calls and CPU are divided by the requests the gateway answered (its own counter,
        read once it is quiet), not by those the load generator completed: at the end of a
        timed run some requests are still in flight, and their calls count too.
        """
        gateway = self.gateway
        assert gateway is not None
        webhooks = row.scenario == "webhook-burst"
        results: list[dict[str, Any]] = []
        total_calls: dict[str, dict[str, int]] = {}
        served = 0
        cpu = 0.0
        peak = 0.0
        notes: list[str] = []
        # Redis's counters over the runs; a cold GraphQL row flushes the cache on the same
        # Redis between requests, so its figures would count the flush (bench/scale.py)
        metered = webhooks or row.state != "cold"
        redis_before: list[dict[str, Any]] = []
        redis_after: list[dict[str, Any]] = []
        if row.state == "cold":
            self.providers.service_ms(reset=True)
        for make_spec in runs:
            try:
                spec = make_spec()
            except RowFailed as error:
                if not results:
                    raise
                # e.g. a run overloaded a provider and its breaker is open: keep what ran
                notes.append(f"stopped after {len(results)} of {len(runs)} runs: {error}")
                break
            served_before = self._served(webhooks)
            if metered:
                redis_before.append(self.meter.snapshot())
            calls_before = self.providers.calls(gateway.url)
            gateway.reset_peak_rss()
            cpu_before = gateway.cpu_seconds() or 0.0
            result = self._load(spec)
            p99 = result["p99_ms"] if result["p99_ms"] is not None else 2000.0
            window = min(10.0, max(0.3, 1.5 * p99 / 1000))
            served += self._quiet(webhooks, window) - served_before
            if metered:
                redis_after.append(self.meter.snapshot())
            cpu += (gateway.cpu_seconds() or 0.0) - cpu_before
            peak = max(peak, gateway.peak_rss_mb() or 0.0)
            calls_after = self.providers.calls(gateway.url)
            for provider, operations in calls_after.items():
                for operation, n in operations.items():
                    delta = n - calls_before.get(provider, {}).get(operation, 0)
                    if delta:
                        ops = total_calls.setdefault(provider, {})
                        ops[operation] = ops.get(operation, 0) + delta
            results.append(result)
            if result["errors"]:
                self.log(f"    {result['errors']} errors, e.g. {result['first_errors'][:1]}")
            if not gateway.alive():
                raise RuntimeError(f"the gateway died:\n{gateway.log_tail()}")
        best = (
            min(results, key=lambda r: r["p50_ms"] if r["p50_ms"] is not None else 1e9)
            if row.state == "cold"
            else max(results, key=lambda r: r["rps"])
        )
        per_query = {
            p: sum(total_calls.get(p, {}).values()) / served if served else 0.0
            for p in self.providers.providers
        }
        by_operation = {
            f"{p}.{op}": n / served
            for p, ops in sorted(total_calls.items())
            for op, n in sorted(ops.items())
            if served
        }
        requests = sum(r["requests"] for r in results)
        record = {
            "scenario": row.scenario,
            "mode": row.mode,
            "state": row.state,
            "concurrency": row.concurrency,
            "loadgen": best["loadgen"],
            "requests": requests,
            "served": served,
            "calls_per_query": per_query,
            "calls_by_operation": by_operation,
            "p50_ms": best["p50_ms"],
            "p99_ms": best["p99_ms"],
            "rps": best["rps"],
            "runs": [
                {k: r[k] for k in ("requests", "rps", "p50_ms", "p99_ms", "errors")}
                for r in results
            ],
            "errors": sum(r["errors"] for r in results),
            "cpu_ms_per_request": cpu / served * 1000 if served else None,
            "peak_rss_mb": peak or None,
            # the providers' own median time per call over this row (cold rows)
            "provider_ms": self.providers.service_ms() if row.state == "cold" else {},
            "redis": scale.per_request(*scale.summed(redis_before, redis_after), served)
            if redis_after
            else None,
            "notes": notes,
        }
        self.log(
            f"  {row.label}: p50 {_ms(best['p50_ms'])}, p99 {_ms(best['p99_ms'])}, "
            f"{best['rps']:.0f} req/s, calls/q "
            f"{fmt_calls(per_query, self.providers.providers)}"
        )
        return record

    def flush(self) -> None:
        delete_prefix(self.redis, self.prefix)

    def graphql_row(self, row: Row) -> dict[str, Any]:
        options = self.options
        base = self.graphql_spec(row.scenario)
        if row.state == "cold":
            flush = {"redis_url": self.redis_url, "prefix": self.prefix}

            def cold() -> dict[str, Any]:
                return {**base, "concurrency": 1, "count": options.cold_requests, "flush": flush}

            # a first request outside the timing: cold caches, not a cold process (lazy
            # imports, first connections to each provider)
            self.check_and_prime(row.scenario)
            return self.measure(row, [cold] * options.repeat)

        self.check_and_prime(row.scenario)

        def warm() -> dict[str, Any]:
            # entity TTLs are short (files 30 s): refill before each run, outside the timing
            self.check_and_prime(row.scenario)
            return {**base, "concurrency": row.concurrency, "duration": options.duration}

        return self.measure(row, [warm] * options.repeat)

    def cold_distinct_row(self) -> dict[str, Any]:
        """portal-home of customers never asked before in this mode, each once, 8 at a time,
        with no flush: what a miss costs, Redis included (bench/scale.py)."""
        assert self.gateway is not None
        pool = self.providers.dataset.mixed_pool
        taken = {self.providers.dataset.portal_customer, *self.providers.dataset.webhook_customers}
        fresh = [c for c in pool if c not in taken][-COLD_DISTINCT:]
        row = Row("portal-home", "default", "cold-distinct", 8)

        def once() -> dict[str, Any]:
            return {
                "url": self.gateway.url + "/graphql" if self.gateway else "",
                "requests": [self.portal_request(c) for c in fresh],
                "count": len(fresh),
                "concurrency": row.concurrency,
            }

        return self.measure(row, [once])

    def webhook_row(self, row: Row) -> dict[str, Any]:
        dataset = self.providers.dataset
        assert self.gateway is not None
        url = self.gateway.url + "/webhooks/stripe"
        count = self.options.webhook_events

        def burst() -> dict[str, Any]:
            if row.state == "cold":
                self.flush()
            else:
                # the pages of the customers concerned are cached: each event drops some
                self.prime_portal_pages(dataset.webhook_customers)
            events = signed_stripe_events(
                WEBHOOK_SECRET, dataset.invoices, count, uuid.uuid4().hex[:12]
            )
            return {
                "url": url,
                "concurrency": row.concurrency,
                "count": count,
                "check_graphql": False,
                "requests": [
                    {
                        "body": body.decode(),
                        "headers": {
                            "Content-Type": "application/json",
                            "Stripe-Signature": signature,
                        },
                    }
                    for body, signature in events
                ],
            }

        return self.measure(row, [burst] * self.options.repeat)

    # -- a mode: one gateway process ------------------------------------------------------

    def gateway_env(self, mode: str) -> dict[str, str]:
        from gateway.settings import Settings

        # the benchmark decides the gateway's configuration, not the caller's shell
        settings = {name.upper() for name in Settings.model_fields}
        env = {key: value for key, value in os.environ.items() if key.upper() not in settings}
        env.update(
            {
                "GATEWAY_ENV": "development",
                "REDIS_URL": self.redis_url,
                "CACHE_PREFIX": self.prefix,
                "AUTH_DEV_SECRET": self.secret,
                "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "SANDBOX_FILES_DIR": str(self.workdir / "sandbox-files"),
                "PYTHONPATH": str(ROOT),
                # incoming limits stay on (their counters are part of every request's round
                # trip) but far above what one benchmark client sends
                "RATE_LIMIT_VIEWER": "1000000000/60s",
                "RATE_LIMIT_SERVICE": "1000000000/60s",
                "RATE_LIMIT_IP": "1000000000/60s",
                **self.providers.gateway_env(),
                **MODES[mode].env,
            }
        )
        return env

    def run_mode(self, mode: str) -> None:
        self.prefix = f"pgbench:{uuid.uuid4().hex[:10]}:"
        self.log(f"mode {mode} ({MODES[mode].description})")
        self.flush()
        self.start_gateway(mode)
        try:
            for scenario in self.options.scenarios:
                if scenario == "webhook-burst" and not _webhooks_available():
                    for row in rows_for(scenario, mode):
                        self.rows.append(_skipped(row, "not available (no gateway/webhooks)"))
                    continue
                for row in rows_for(scenario, mode):
                    try:
                        if scenario == "webhook-burst":
                            self.rows.append(self.webhook_row(row))
                        else:
                            self.rows.append(self.graphql_row(row))
                    except RowFailed as error:
                        self.log(f"  {row.label}: FAILED: {error}")
                        self.rows.append(_skipped(row, f"failed: {error}"))
                if (scenario, mode) == ("portal-home", "default"):
                    # before staff-50 and mixed have asked for the customers it takes
                    self.rows.append(self.cold_distinct_row())
                if self.options.profile:
                    for state in PROFILED.get((scenario, mode), ()):
                        self.profile(mode, scenario, state)
                self.recover(mode)
        finally:
            assert self.gateway is not None
            self.gateway.stop()
            self.flush()

    def start_gateway(self, mode: str) -> None:
        port = free_port()
        command = [*self.providers.gateway_command(), "--host", "127.0.0.1", "--port", str(port)]
        log_path = self.workdir / f"gateway-{mode}.log"
        self.gateway = GatewayProcess(command, self.gateway_env(mode), port, log_path)
        self.gateway.start()
        self.log(f"  gateway pid {self.gateway.pid}: {' '.join(command)}")

    def recover(self, mode: str) -> None:
        """A scenario that overloaded a provider (no batching at c=16) may leave its circuit
        breaker open: the next scenario gets a fresh gateway rather than its refusals."""
        assert self.gateway is not None
        try:
            ready = httpx.get(self.gateway.url + "/readyz", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            ready = {}
        providers = ready.get("providers", {})
        if self.gateway.alive() and all(p.get("breaker") == "closed" for p in providers.values()):
            return
        self.log(f"  gateway not ready ({providers}): restarting it for the next scenario")
        self.gateway.stop()
        self.start_gateway(mode)

    def profile(self, mode: str, scenario: str, state: str) -> None:
        """py-spy on the gateway while the load of one row runs again (see PROFILED)."""
        if not profiling.available():
            self.log("  (py-spy is not installed: no profile)")
            return
        assert self.gateway is not None
        if state == "warm":
            self.check_and_prime(scenario)
            spec = {
                **self.graphql_spec(scenario),
                "concurrency": 16,
                "duration": self.options.duration,
            }
            title = f"warm {scenario} c=16 [{mode}] ({MODES[mode].description})"
        else:
            spec = {
                **self.graphql_spec(scenario),
                "concurrency": 1,
                "count": self.options.cold_requests,
                "flush": {"redis_url": self.redis_url, "prefix": self.prefix},
            }
            title = f"cold {scenario} c=1 [{mode}] ({MODES[mode].description})"
        self.log(f"  profiling {title}")
        try:
            summary = profiling.record(self.gateway.pid, lambda: self._load(spec), title)
        except profiling.ProfileError as error:
            self.log(f"  (no profile: {error})")
            return
        name = f"{self.options.output.stem}.profile-{scenario}-{state}-{mode}.json"
        raw_path = self.options.output.with_name(name)
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        raw_path.write_text(json.dumps(summary.pop("stacks"), indent=0))
        summary["raw_stacks"] = str(raw_path)
        self.profiles.append(summary)


def _first_error(response: httpx.Response) -> str:
    """`HTTP 200: <first GraphQL error message> (<code>)`, or the start of the body."""
    try:
        error = response.json()["errors"][0]
        detail = f"{error['message']} ({error.get('extensions', {}).get('code')})"
    except (ValueError, KeyError, IndexError, TypeError):
        detail = response.text[:200]
    return f"HTTP {response.status_code}: {detail}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _webhooks_available() -> bool:
    return (ROOT / "gateway" / "webhooks" / "stripe.py").exists()


def _skipped(row: Row, reason: str) -> dict[str, Any]:
    return {
        "scenario": row.scenario,
        "mode": row.mode,
        "state": row.state,
        "concurrency": row.concurrency,
        "skipped": reason,
    }


def run(options: Options, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole benchmark; answers the result that latest.json holds."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    providers = build_providers(options)
    started = datetime.now(UTC)
    with (
        bench_redis(options.redis) as redis_url,
        tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp,
    ):
        workdir = Path(tmp)
        bench = Bench(options, providers, redis_url, workdir, log)
        log(
            f"providers: {providers.name} ({options.latency} ms a call); redis {redis_url}; "
            f"load generator: {'wrk' if bench.use_wrk else 'python (aiohttp)'}"
        )
        machine = {"start": measure_machine(redis_url)}
        calls = None
        if options.provider_calls:
            log("CPU per provider call (bench/provider_calls.py)")
            calls = provider_calls.measure(blocks=3 if options.quick else 7)
        providers.start(workdir)
        try:
            for mode in options.modes:
                bench.run_mode(mode)
            machine["end"] = measure_machine(redis_url)
        except BaseException:
            for log_file in sorted(workdir.glob("*.log")):
                log(f"--- {log_file.name} (last lines)")
                log("\n".join(log_file.read_text(errors="replace").splitlines()[-20:]))
            raise
        finally:
            providers.stop()
            bench.redis.close()
            bench.meter.close()
            if options.logs is not None:
                options.logs.mkdir(parents=True, exist_ok=True)
                for log_file in workdir.glob("*.log"):
                    shutil.copy(log_file, options.logs / log_file.name)
    result: dict[str, Any] = {
        "meta": {
            "started_at": started.strftime("%Y-%m-%d %H:%M UTC"),
            "providers": providers.name,
            "provider_names": list(providers.providers),
            "latency_ms": options.latency,
            "loadgen": "wrk" if bench.use_wrk else "python",
            "duration_s": options.duration,
            "repeat": options.repeat,
            "cold_requests": options.cold_requests,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "commit": _commit(),
            "modes": {m: MODES[m].description for m in options.modes},
            "machine": machine,
        },
        "rows": bench.rows,
        "ratios": ratios(bench.rows),
        "targets": targets(bench.rows, options.latency, providers),
        "profiles": bench.profiles,
        "provider_calls": calls,
        "redis": {"kind": options.redis, "url": redis_url, "primaries": bench.meter.primaries},
        "capacity": scale.capacity(bench.rows, bench.meter.primaries),
    }
    return result


def _commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
    except OSError:
        return None
    return completed.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    began = time.monotonic()
    result = run(options)
    result["meta"]["elapsed_s"] = round(time.monotonic() - began, 1)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"\n(written to {options.output})")
    return 0
