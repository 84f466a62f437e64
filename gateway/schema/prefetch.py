"""Prefetch: start a load the query will need before the field that needs it runs.

GraphQL resolves `me { files }` in two steps: `me` (a CRM call), then `files` with the
customer as parent. But a customer's files depend only on the customer id, which the
viewer's token already gives, so waiting for the CRM puts the file store's round trip
behind the CRM's for nothing. `me` therefore looks at its own selection and, where
`files` is asked for, starts that page's load at once: it runs beside the CRM call, and
the `files` resolver later finds the same load in the request's dataloader (DESIGN 9(c):
providers that do not depend on each other are called in parallel).

Only what the query really asks is started: fragments are followed, `@skip`/`@include`
honoured, arguments coerced the way the executor will coerce them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSkipDirective,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
)
from graphql.execution.values import get_argument_values, get_directive_values

__all__ = ["selected_arguments"]

log = logging.getLogger(__name__)


def _included(node: Any, info: GraphQLResolveInfo[Any]) -> bool:
    skip = get_directive_values(GraphQLSkipDirective, node, info.variable_values)
    if skip is not None and skip.get("if") is True:
        return False
    include = get_directive_values(GraphQLIncludeDirective, node, info.variable_values)
    return not (include is not None and include.get("if") is False)


def _fields(
    selection_set: SelectionSetNode | None, info: GraphQLResolveInfo[Any], seen: set[str]
) -> Iterator[FieldNode]:
    for node in selection_set.selections if selection_set is not None else ():
        if not _included(node, info):
            continue
        if isinstance(node, FieldNode):
            yield node
        elif isinstance(node, InlineFragmentNode):
            yield from _fields(node.selection_set, info, seen)
        elif isinstance(node, FragmentSpreadNode):
            name = node.name.value
            fragment = info.fragments.get(name)
            if fragment is not None and name not in seen:
                seen.add(name)
                yield from _fields(fragment.selection_set, info, seen)


def selected_arguments(info: GraphQLResolveInfo[Any], field_name: str) -> list[dict[str, Any]]:
    """The coerced arguments of each `field_name` selected directly under the field being
    resolved (an alias each); empty when it is not selected or cannot be read."""
    parent = get_named_type(info.return_type)
    if not isinstance(parent, GraphQLObjectType) or field_name not in parent.fields:
        return []
    definition = parent.fields[field_name]
    found: list[dict[str, Any]] = []
    try:
        for field_node in info.field_nodes:
            for node in _fields(field_node.selection_set, info, set()):
                if node.name.value == field_name:
                    found.append(get_argument_values(definition, node, info.variable_values))
    except Exception:  # the executor will report a bad argument; a prefetch just stands down
        log.debug("prefetch skipped: arguments of %s unreadable", field_name, exc_info=True)
        return []
    return found
