"""schema.graphql is the printed schema: users and routers read it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.schema import print_sdl

ROOT = Path(__file__).resolve().parent.parent


def test_checked_in_schema_equals_export() -> None:
    exported = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "export-schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert exported == (ROOT / "schema.graphql").read_text(), (
        "schema.graphql is out of date: run `make schema`"
    )
    assert exported == print_sdl()


def test_schema_is_a_federation_v2_subgraph_with_the_core_entities() -> None:
    sdl = print_sdl()
    assert sdl.startswith('schema @link(url: "https://specs.apollo.dev/federation/v2')
    for entity in ("Customer", "Invoice", "Ticket", "File"):
        assert f'type {entity} @key(fields: "id")' in sdl
    for field in (
        "me: Customer",
        "customer(id: ID!): Customer",
        "customers(ids: [ID!]!): [Customer]!",
    ):
        assert field in sdl
