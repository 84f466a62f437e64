"""Structural limits of a parsed document, checked in one linear pass before validation.

What the pass measures, per operation and with fragments expanded (each fragment is
measured once and its figures reused wherever it is spread, so twenty fragments that each
spread the next twice cost twenty measurements, not a million):

- depth: nested selection sets from the root field (root field = 1), introspection excluded;
- fields: field selections as execution would meet them;
- aliases: aliased fields, likewise;

And per document: directives (as written), and field pairs: how many pairs of fields the
overlapping-fields validation may compare. That rule compares fields sharing a response
name in a selection set (inline and named fragments merged in) pairwise, and then their
sub-fields of the same name, pairwise again: 4,000 copies of `me { id }` took seconds, and
so did 20 `me` of 20 `invoices` each. The count is an upper bound: for each selection set
and each relative path of response names under a name selected more than once, C(n, 2) of
the n fields found there. It is worked out in a second pass, only for a document within the
other limits (which bound its work). Unused fragments are measured too, since validation
walks them as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from gateway.errors import QueryTooComplex

__all__ = ["DocumentLimits", "Shape"]

T = TypeVar("T")


@dataclass(slots=True)
class Shape:
    """What a selection set weighs once its fragments are expanded."""

    depth: int = 0
    fields: int = 0
    aliases: int = 0


@dataclass(slots=True, frozen=True)
class DocumentLimits:
    max_depth: int
    max_fields: int
    max_aliases: int
    max_pairs: int
    max_directives: int

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        """The limits the document exceeds, as QUERY_TOO_COMPLEX errors (empty: none)."""
        shapes = _Shapes(document)
        worst = Shape()
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                shape = shapes.selection_set(definition.selection_set)
                shapes.directives += len(definition.directives or ())
                for variable in definition.variable_definitions or ():
                    shapes.directives += len(variable.directives or ())
            elif isinstance(definition, FragmentDefinitionNode):
                shapes.directives += len(definition.directives or ())
                # An unused fragment is refused by validation, but walked before it: its
                # size is bounded like an operation's. Not its depth, which counts only
                # where it is spread (inside introspection, say, it does not count).
                measured = shapes.measured.get(definition.name.value) or Shape()
                shape = Shape(fields=measured.fields, aliases=measured.aliases)
            else:
                continue
            worst.depth = max(worst.depth, shape.depth)
            worst.fields = max(worst.fields, shape.fields)
            worst.aliases = max(worst.aliases, shape.aliases)
        errors = []
        if shapes.directives > self.max_directives:
            errors.append(_too_complex("directives", shapes.directives, self.max_directives))
        if worst.depth > self.max_depth:
            errors.append(
                _error(
                    f"query depth {worst.depth} exceeds {self.max_depth}",
                    self.max_depth,
                    worst.depth,
                )
            )
        if worst.fields > self.max_fields:
            errors.append(_too_complex("fields", worst.fields, self.max_fields))
        if worst.aliases > self.max_aliases:
            errors.append(_too_complex("aliases", worst.aliases, self.max_aliases))
        if errors:
            return errors
        pairs = _Pairs(document).total
        if pairs > self.max_pairs:
            return [
                _error(
                    f"{pairs} pairs of fields sharing a response name exceed {self.max_pairs}",
                    self.max_pairs,
                    pairs,
                )
            ]
        return []


class _Fragments:
    """Measures a document's fragments, each after the fragments it spreads (an explicit
    stack, so a long chain of fragments costs no Python recursion). A fragment on a cycle
    measures as nothing: validation refuses the cycle."""

    def __init__(self, document: DocumentNode) -> None:
        self.definitions = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }

    def measure_all(
        self, measure: Callable[[SelectionSetNode], T], measured: dict[str, T | None]
    ) -> None:
        """Fills `measured` (which `measure` reads for the fragments a set spreads)."""
        state: dict[str, int] = {}  # 1: on the stack, 2: done
        for root in self.definitions:
            if root in state:
                continue
            stack: list[tuple[str, list[str]]] = [(root, _spreads(self.definitions[root]))]
            state[root] = 1
            while stack:
                name, pending = stack[-1]
                while pending:
                    child = pending.pop()
                    if child in self.definitions and child not in state:
                        state[child] = 1
                        stack.append((child, _spreads(self.definitions[child])))
                        break
                    if state.get(child) == 1:
                        measured.setdefault(child, None)  # a cycle: not expanded
                else:
                    stack.pop()
                    state[name] = 2
                    if name not in measured:
                        measured[name] = measure(self.definitions[name].selection_set)


class _Shapes:
    """Depth, fields and aliases of a document's selection sets; each fragment measured once."""

    def __init__(self, document: DocumentNode) -> None:
        self.directives = 0  # in the document as written: each selection set is measured once
        self.measured: dict[str, Shape | None] = {}
        _Fragments(document).measure_all(self.selection_set, self.measured)

    def selection_set(self, node: SelectionSetNode) -> Shape:
        shape = Shape()
        for selection in node.selections:
            self.directives += len(selection.directives or ())
            if isinstance(selection, FieldNode):
                shape.fields += 1
                if selection.alias is not None:
                    shape.aliases += 1
                introspection = selection.name.value.startswith("__")
                if selection.selection_set is None:
                    if not introspection:
                        shape.depth = max(shape.depth, 1)
                    continue
                child = self.selection_set(selection.selection_set)
                shape.fields += child.fields
                shape.aliases += child.aliases
                if not introspection:
                    shape.depth = max(shape.depth, 1 + child.depth)
                continue
            if isinstance(selection, InlineFragmentNode):
                merged: Shape | None = self.selection_set(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                merged = self.measured.get(selection.name.value)
            else:
                merged = None
            if merged is not None:
                shape.fields += merged.fields
                shape.aliases += merged.aliases
                shape.depth = max(shape.depth, merged.depth)
        return shape


# fields of a selection set (and below) by their path of response names from it
Paths = Counter[tuple[str, ...]]


class _Pairs:
    """The field pairs the overlapping-fields validation may compare (see the module's
    docstring), summed over the document's selection sets as written."""

    def __init__(self, document: DocumentNode) -> None:
        self.total = 0
        self.measured: dict[str, Paths | None] = {}
        _Fragments(document).measure_all(self.selection_set, self.measured)
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                self.selection_set(definition.selection_set)

    def selection_set(self, node: SelectionSetNode) -> Paths:
        paths: Paths = Counter()
        names: Counter[str] = Counter()
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                name = (selection.alias or selection.name).value
                names[name] += 1
                paths[(name,)] += 1
                if selection.selection_set is not None:
                    below = self.selection_set(selection.selection_set)
                    paths.update({(name, *path): n for path, n in below.items()})
                continue
            if isinstance(selection, InlineFragmentNode):
                merged: Paths | None = self.selection_set(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                merged = self.measured.get(selection.name.value)
            else:
                merged = None
            if merged:
                paths.update(merged)
                names.update({path[0]: n for path, n in merged.items() if len(path) == 1})
        if any(n > 1 for n in names.values()):
            self.total += sum(n * (n - 1) // 2 for path, n in paths.items() if names[path[0]] > 1)
        return paths


def _spreads(fragment: FragmentDefinitionNode) -> list[str]:
    """The names of the fragments a fragment spreads, at any depth of its own selections."""
    found: list[str] = []
    stack = [fragment.selection_set]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                found.append(selection.name.value)
            elif isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set:
                stack.append(selection.selection_set)
    return found


def _too_complex(what: str, actual: int, limit: int) -> GraphQLError:
    return _error(f"{actual} {what} exceed {limit}", limit, actual)


def _error(message: str, limit: int, actual: int) -> GraphQLError:
    error = QueryTooComplex(message, limit=limit, actual=actual)
    return GraphQLError(message, extensions=error.extensions)
