"""The federation Schema, with `_entities` checking each representation before using it."""

from __future__ import annotations

import inspect
from typing import Any

import strawberry
from strawberry.federation.schema import FederationAny
from strawberry.types.info import Info

from gateway.errors import BadUserInput

__all__ = ["FederationSchema"]


class FederationSchema(strawberry.federation.Schema):
    """strawberry's federation Schema; a malformed representation fails only its own item.

    strawberry's `_entities` resolver uses each representation as given: one that is not an
    object, lacks `__typename`, names a type that is no entity, or carries keys the type's
    `resolve_reference` does not take raises out of the whole field (an unexpected error,
    INTERNAL_SERVER_ERROR) and leaves the references it already started unawaited. Here
    such an item is null with BAD_USER_INPUT, and the well-formed ones resolve.
    """

    def entities_resolver(
        self, info: Info, representations: list[FederationAny]
    ) -> list[FederationAny]:
        results: list[Any] = [None] * len(representations)
        positions: list[int] = []
        checked: list[Any] = []
        for index, representation in enumerate(representations):
            problem = self._problem(representation)
            if problem is None:
                positions.append(index)
                checked.append(representation)
            else:
                results[index] = BadUserInput(
                    f"representations[{index}] {problem}", field="representations"
                )
        resolved = super().entities_resolver(info, checked)
        for index, result in zip(positions, resolved, strict=True):
            results[index] = result
        return results

    def _problem(self, representation: Any) -> str | None:
        """What is wrong with one representation; None when it can be resolved.

        Key values given as numbers become strings (an ID may be sent either way).
        """
        if not isinstance(representation, dict):
            return "must be an object with __typename and the type's key fields"
        typename = representation.get("__typename")
        if not isinstance(typename, str):
            return "has no __typename"
        graphql_type = self.schema_converter.type_map.get(typename)
        origin = getattr(getattr(graphql_type, "definition", None), "origin", None)
        resolve = getattr(origin, "resolve_reference", None)
        if resolve is None:
            return f"names {typename!r}, which is not an entity of this schema"
        parameters = inspect.signature(resolve).parameters
        keys = {name for name in parameters if name not in ("cls", "info")}
        required = {name for name in keys if parameters[name].default is inspect.Parameter.empty}
        given = set(representation) - {"__typename"}
        if not required <= given <= keys:
            return f"for {typename} takes the key fields {', '.join(sorted(keys))}"
        for name in given:
            value = representation[name]
            if isinstance(value, int) and not isinstance(value, bool):
                representation[name] = str(value)
            elif not isinstance(value, str):
                return f"has a {name} that is not an ID"
        return None
