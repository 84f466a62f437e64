"""Authorization checks shared by every resolver."""

from __future__ import annotations

from typing import Any

from gateway.auth import Viewer
from gateway.context import Context
from gateway.errors import BadUserInput, Forbidden, NotFound, Unauthenticated

__all__ = [
    "check_owner",
    "check_page_args",
    "require_customer",
    "require_privileged",
    "require_viewer",
]

MAX_PAGE = 100


def require_viewer(ctx: Context) -> Viewer:
    viewer = ctx.viewer
    if not viewer.authenticated:
        raise Unauthenticated("authentication required")
    return viewer


def require_customer(ctx: Context) -> str:
    """The signed-in customer's id; staff and services have none."""
    viewer = require_viewer(ctx)
    if viewer.customer_id is None:
        raise Forbidden("this operation acts as a customer: use a customer token")
    return viewer.customer_id


def require_privileged(ctx: Context) -> Viewer:
    viewer = require_viewer(ctx)
    if not viewer.privileged:
        raise Forbidden("staff or service access required")
    return viewer


def check_owner(ctx: Context, customer_id: str | None) -> None:
    """NOT_FOUND, never FORBIDDEN, for another customer's entity: never say which."""
    if customer_id is None or not require_viewer(ctx).may_see(customer_id):
        raise NotFound()


def check_page_args(first: int, after: Any = None) -> None:
    if first < 0 or first > MAX_PAGE:
        raise BadUserInput(f"first must be between 0 and {MAX_PAGE}", field="first")
    if after is not None and (not isinstance(after, str) or len(after) > 512):
        raise BadUserInput("after must be a cursor from a previous page", field="after")
