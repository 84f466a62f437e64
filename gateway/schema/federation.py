"""The federation Schema: `_entities` checks each representation before using it, and
`_service { sdl }` is for services only where introspection is off."""

from __future__ import annotations

import inspect
from typing import Any, cast

import strawberry
from strawberry.federation.schema import FederationAny
from strawberry.tools import create_type
from strawberry.types.base import get_object_definition
from strawberry.types.field import StrawberryField
from strawberry.types.info import Info

from gateway.context import Context
from gateway.errors import BadUserInput, Forbidden, Unauthenticated

__all__ = ["FederationSchema", "Service"]


@strawberry.type(name="_Service")
class Service:
    """What Apollo Federation asks a subgraph for: its SDL, federation directives included."""

    sdl: str


class FederationSchema(strawberry.federation.Schema):
    """strawberry's federation Schema; a malformed representation fails only its own item,
    and the SDL is shown only to whom introspection would show the schema.

    strawberry's `_entities` resolver uses each representation as given: one that is not an
    object, lacks `__typename`, names a type that is no entity, or carries keys the type's
    `resolve_reference` does not take raises out of the whole field (an unexpected error,
    INTERNAL_SERVER_ERROR) and leaves the references it already started unawaited. Here
    such an item is null with BAD_USER_INPUT, and the well-formed ones resolve.

    strawberry's `_service` answers anyone, which would undo GATEWAY_INTROSPECTION=false.
    strawberry keeps a query type's own `_service` field, so the query type is given one
    that resolves through `service_resolver`.
    """

    def __init__(self, query: type | None = None, **options: Any) -> None:
        service = cast(
            "StrawberryField", strawberry.field(name="_service", resolver=self.service_resolver)
        )
        root = create_type("Query", [service])
        if query is not None:
            # as strawberry adds its own root fields: a subclass that keeps the type's
            # description, directives and extend flag
            definition = get_object_definition(query, strict=True)
            root = strawberry.type(
                type("Query", (root, query), {}),
                description=definition.description,
                directives=definition.directives,
                extend=definition.extend,
            )
        super().__init__(query=root, **options)

    def service_resolver(self, info: Info[Context, Any]) -> Service:
        """The SDL; where introspection is off, only to services (a valid X-API-Key):
        federation routers compose with it, and nobody else needs the whole schema."""
        context = info.context
        if not context.settings.introspection and not context.viewer.service:
            if not context.viewer.authenticated:
                raise Unauthenticated("_service needs a service API key (X-API-Key)")
            raise Forbidden("_service is for services: it needs a service API key (X-API-Key)")
        return Service(sdl=self.as_str())

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
