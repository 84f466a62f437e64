"""Static query cost (DESIGN §11): 1 per field; a list or connection multiplies the cost of
its sub-selection by `first` (connections default to 20), by the length of `ids`, or, for
federation's `_entities`, by the number of representations.

Each fragment's cost is worked out once per operation and reused wherever it is spread, so
the walk is linear in the document however often fragments repeat. Abstract types (the
`_Entity` union, interfaces) cost what their fields and type-conditioned fragments cost,
summed: an upper bound, whichever type each item turns out to be.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLCompositeType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    is_composite_type,
    value_from_ast_untyped,
)

__all__ = ["DEFAULT_PAGE", "OperationCost"]

DEFAULT_PAGE = 20


class OperationCost:
    """The cost of one operation under given variables, and the most representations one
    `_entities` field asks for (capped on its own: each is a lookup)."""

    __slots__ = ("_fragments", "_measured", "_schema", "_variables", "representations")

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any] | None,
    ) -> None:
        self._schema = schema
        self._fragments = fragments
        self._variables = variables or {}
        self._measured: dict[str, int] = {}
        self.representations = 0

    def operation(self, operation: OperationDefinitionNode) -> int:
        root = self._schema.get_root_type(operation.operation)
        if root is None:
            return 0
        return self._selection_cost(root, operation.selection_set)

    def _selection_cost(self, parent: GraphQLCompositeType, selection_set: SelectionSetNode) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name.startswith("__"):
                    continue
                fields = (
                    parent.fields
                    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType)
                    else {}
                )
                field = fields.get(name)
                if field is None:
                    continue
                named = get_named_type(field.type)
                child = 0
                if selection.selection_set is not None and is_composite_type(named):
                    child = self._selection_cost(named, selection.selection_set)
                total += 1 + self._multiplier(selection, named.name) * child
            elif isinstance(selection, InlineFragmentNode):
                target = parent
                if selection.type_condition is not None:
                    target = self._composite(selection.type_condition.name.value) or parent
                total += self._selection_cost(target, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment_cost(selection.name.value)
        return total

    def _fragment_cost(self, name: str) -> int:
        measured = self._measured.get(name)
        if measured is not None:
            return measured
        fragment = self._fragments.get(name)
        target = self._composite(fragment.type_condition.name.value) if fragment else None
        if fragment is None or target is None:
            return 0
        self._measured[name] = 0  # a cycle (refused by validation) adds nothing
        cost = self._measured[name] = self._selection_cost(target, fragment.selection_set)
        return cost

    def _composite(self, name: str) -> GraphQLCompositeType | None:
        found = self._schema.get_type(name)
        return found if is_composite_type(found) else None

    def _multiplier(self, node: FieldNode, type_name: str) -> int:
        arguments = {
            arg.name.value: value_from_ast_untyped(arg.value, self._variables)
            for arg in node.arguments or ()
        }
        representations = arguments.get("representations")
        if node.name.value == "_entities" and isinstance(representations, list):
            self.representations = max(self.representations, len(representations))
            return max(len(representations), 1)
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
