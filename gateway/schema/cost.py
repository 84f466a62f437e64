"""Static query cost (DESIGN §11): 1 per field; a list or connection multiplies the cost of
its sub-selection by `first` (connections default to 20) or by the length of `ids`."""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    value_from_ast_untyped,
)

__all__ = ["query_cost"]

DEFAULT_PAGE = 20


def query_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any] | None,
) -> int:
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    return _selection_cost(schema, root, operation.selection_set, fragments, variables or {}, ())


def _selection_cost(
    schema: GraphQLSchema,
    parent: GraphQLObjectType,
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    seen: tuple[str, ...],
) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            name = selection.name.value
            if name.startswith("__"):
                continue
            field = parent.fields.get(name)
            if field is None:
                continue
            named = get_named_type(field.type)
            child = 0
            if selection.selection_set is not None and isinstance(named, GraphQLObjectType):
                child = _selection_cost(
                    schema, named, selection.selection_set, fragments, variables, seen
                )
            total += 1 + _multiplier(selection, named.name, variables) * child
        elif isinstance(selection, InlineFragmentNode):
            target = parent
            if selection.type_condition is not None:
                found = schema.get_type(selection.type_condition.name.value)
                target = found if isinstance(found, GraphQLObjectType) else parent
            total += _selection_cost(
                schema, target, selection.selection_set, fragments, variables, seen
            )
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is None or fragment.name.value in seen:
                continue
            found = schema.get_type(fragment.type_condition.name.value)
            target = found if isinstance(found, GraphQLObjectType) else parent
            total += _selection_cost(
                schema,
                target,
                fragment.selection_set,
                fragments,
                variables,
                (*seen, fragment.name.value),
            )
    return total


def _multiplier(node: FieldNode, type_name: str, variables: dict[str, Any]) -> int:
    arguments = {
        arg.name.value: value_from_ast_untyped(arg.value, variables) for arg in node.arguments or ()
    }
    ids = arguments.get("ids")
    if isinstance(ids, list):
        return max(len(ids), 1)
    first = arguments.get("first")
    if isinstance(first, int) and not isinstance(first, bool):
        return max(first, 1)
    if type_name.endswith("Connection"):
        return DEFAULT_PAGE
    # other lists (subscriptions, edges) are bounded by the page their parent asked for
    return 1
