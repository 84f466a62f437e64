"""`portal-gateway serve|worker|outbox|export-schema|token|check|forget`."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from gateway.settings import Settings

__all__ = ["main"]


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        print("configuration error:", file=sys.stderr)
        for problem in error.errors():
            where = ".".join(str(p) for p in problem["loc"]) or "settings"
            print(f"  {where.upper()}: {problem['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.auth import mint_dev_token
    from gateway.observability import configure_logging
    from gateway.server import uvicorn_options
    from gateway.sources.sandbox import DEMO_CUSTOMER_ID

    settings = _settings()
    host = args.host or settings.host
    port = args.port or settings.port
    # the app factory (one per worker) reads its settings from the environment
    os.environ["HOST"], os.environ["PORT"] = host, str(port)
    if not settings.production and settings.crm_source == "sandbox":
        secret = settings.dev_secret()
        assert secret is not None
        token = mint_dev_token(secret, DEMO_CUSTOMER_ID, ttl=7 * 24 * 3600)
        where = "GraphiQL:  " if settings.graphiql else "GraphQL:   "
        print(
            f"\nportal-gateway (development, sandbox providers)\n"
            f"  {where} http://{host}:{port}/graphql\n"
            f"  demo token (customer {DEMO_CUSTOMER_ID}, valid 7 days):\n\n"
            f"  Authorization: Bearer {token}\n",
            flush=True,
        )
    configure_logging(settings.log_level, settings)
    options = uvicorn_options(settings)
    options.update(host=host, port=port)
    uvicorn.run(
        "gateway.app:served_app", factory=True, workers=args.workers, reload=args.reload, **options
    )
    return 0


def worker(_args: argparse.Namespace) -> int:
    from gateway.events.worker import run_worker
    from gateway.observability import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings)
    try:
        return run_worker(settings)
    except ValueError as error:  # a backend named without the variables it needs
        print(f"configuration error: {error}", file=sys.stderr)
        return 2


def check(_args: argparse.Namespace) -> int:
    import asyncio

    from gateway.check import configuration_problems, run_checks

    try:
        settings = Settings()
    except ValidationError as error:
        print("configuration: FAILED")
        for line in configuration_problems(error):
            print(f"  {line}")
        return 1
    print("configuration: ok")
    results = asyncio.run(run_checks(settings))
    for result in results:
        print(result.line())
    return 0 if all(result.ok for result in results) else 1


def export_schema(_args: argparse.Namespace) -> int:
    from gateway.schema import print_sdl

    sys.stdout.write(print_sdl())
    return 0


def token(args: argparse.Namespace) -> int:
    from gateway.auth import mint_dev_token

    settings = _settings()
    secret = settings.dev_secret()
    if secret is None:
        print("dev tokens need AUTH_DEV_SECRET (refused in production)", file=sys.stderr)
        return 1
    if args.customer is None and args.role != "staff":
        print("give --customer ID, or --role staff", file=sys.stderr)
        return 2
    roles = [args.role] if args.role else []
    print(mint_dev_token(secret, args.customer, roles, ttl=args.ttl))
    return 0


def forget(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.forget import ForgetFailed, forget_customer, report_lines

    settings = _settings()
    try:
        removed = asyncio.run(forget_customer(settings, args.customer))
    except ForgetFailed as error:
        print(f"forget: {error}", file=sys.stderr)
        return 1
    print("\n".join(report_lines(args.customer, removed)))
    return 0


def outbox(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.outbox import admin

    settings = _settings()
    try:
        if args.action == "list":
            lines = admin.dead_letter_lines(asyncio.run(admin.list_dead(settings)))
        elif args.action == "retry":
            write = asyncio.run(admin.retry(settings, args.name))
            lines = [f"queued again: {write.customer_id}/{write.id}"]
        else:
            write = asyncio.run(admin.drop(settings, args.name))
            lines = [f"dropped: {write.customer_id}/{write.id} ({write.kind.value})"]
    except admin.OutboxCommandFailed as error:
        print(f"outbox: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portal-gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the gateway (uvicorn)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--reload", action="store_true")
    p.set_defaults(run=serve)

    p = commands.add_parser(
        "worker", help="consume the event queue: send notifications, deliver queued writes"
    )
    p.set_defaults(run=worker)

    p = commands.add_parser("check", help="validate the configuration, call each provider once")
    p.set_defaults(run=check)

    p = commands.add_parser("export-schema", help="print the SDL that schema.graphql equals")
    p.set_defaults(run=export_schema)

    p = commands.add_parser("token", help="mint a dev token (AUTH_DEV_SECRET)")
    p.add_argument("--customer")
    p.add_argument("--role", choices=["staff"])
    p.add_argument("--ttl", type=int, default=3600)
    p.set_defaults(run=token)

    p = commands.add_parser(
        "forget", help="erase everything cached or queued about one customer (CRM id)"
    )
    p.add_argument("--customer", required=True)
    p.set_defaults(run=forget)

    p = commands.add_parser("outbox", help="list, retry or drop the outbox's dead letters")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every dead letter: CUSTOMER/WRITE, kind, reason")
    for action, what in (("retry", "queue it again"), ("drop", "forget it")):
        sub = actions.add_parser(action, help=f"{what}: CUSTOMER/WRITE as `list` prints it")
        sub.add_argument("name")
    p.set_defaults(run=outbox)

    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
