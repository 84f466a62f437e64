"""Incremental delivery (@defer, @stream): graphql-core's payloads as clients read them.

graphql-core 3.3 executes `@defer` and `@stream` as the GraphQL working group's current
proposal says (graphql-js 17.0.0-alpha.9): the first payload announces `pending` parts by
id, later ones carry `incremental` entries by id and `completed` ids. Clients negotiate
one of two wire formats (docs/design.md "Incremental delivery"):

- `deferSpec=20220824`: the format of Apollo Router and of Apollo Client's
  Defer20220824Handler: `{data, hasNext}`, then `{incremental: [{data | items, path,
  label?, errors?, extensions?}], hasNext}`, a stream's `path` ending at the index of its
  first item. Bridged here from graphql-core's payloads (`WireFormat.DEFER_20220824`).
- `incrementalSpec=v0.2`: graphql-core's own, as Apollo Client's GraphQL17Alpha9Handler
  reads it (`WireFormat.INCREMENTAL_V02`).

Whatever the format, the answer is also merged here into one response (`merged`): what a
client that asked for no incremental delivery gets, and what the whole-response cache
keeps. The first payload takes in every deferred part already done when it goes out
(entity-cache hits; a stream's items never: the client asked for its first ones first),
and parts a soft deadline deferred while their provider is within it
(PROVIDER_SOFT_DEADLINES; `soft_deferred` rewrites the document). A part's errors and its
`extensions.stale` entries travel with the part.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from graphql import (
    ArgumentNode,
    DirectiveNode,
    DocumentNode,
    ExperimentalIncrementalExecutionResults,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    IncrementalDeferResult,
    InitialIncrementalExecutionResult,
    InlineFragmentNode,
    NameNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    SubsequentIncrementalExecutionResult,
    get_named_type,
)
from graphql.execution import CompletedResult, PendingResult

__all__ = [
    "PROVIDER_FIELDS",
    "IncrementalAnswer",
    "WireFormat",
    "soft_deferred",
]


class WireFormat(enum.Enum):
    """The incremental delivery formats the gateway speaks (the Accept parameter)."""

    DEFER_20220824 = "deferSpec=20220824"
    INCREMENTAL_V02 = "incrementalSpec=v0.2"


# The fields one provider kind answers, which a soft deadline may defer (the kinds:
# gateway/settings.py SOFT_DEADLINE_KINDS).
PROVIDER_FIELDS: Mapping[tuple[str, str], str] = {
    ("Customer", "invoices"): "billing",
    ("Customer", "subscriptions"): "billing",
    ("Customer", "tickets"): "helpdesk",
    ("Customer", "files"): "files",
    ("Query", "invoice"): "billing",
    ("Query", "ticket"): "helpdesk",
    ("Query", "file"): "files",
}
# The label of a fragment the gateway deferred itself; never shown to the client.
_SOFT_LABEL = "gateway-soft-deadline:"
# Loop turns the first payload waits for deferred parts whose data is already there, such
# as entity-cache hits: no I/O is waited for. A deferred invoice page read from the
# in-process cache was done after 5 (tests/test_incremental.py's page); twice that.
_READY_TURNS = 10

Path = list[str | int]
FormatError = Callable[[GraphQLError], dict[str, Any]]


# -- the soft-deadline rewrite ------------------------------------------------------------


def soft_deferred(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    kinds: set[str],
) -> DocumentNode:
    """The document with every field of `kinds` (PROVIDER_FIELDS) of `operation` wrapped in
    an inline fragment deferred under the gateway's own label; fields already inside a
    deferred inline fragment are left as they are. The input is not changed."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    rewritten: dict[str, FragmentDefinitionNode] = {}

    def selections(node: SelectionSetNode, parent: Any) -> SelectionSetNode:
        changed: list[Any] = []
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                field_type = _field_type(parent, selection.name.value)
                if selection.selection_set is not None and field_type is not None:
                    selection = _copy(
                        selection, selection_set=selections(selection.selection_set, field_type)
                    )
                kind = PROVIDER_FIELDS.get((getattr(parent, "name", ""), selection.name.value))
                if kind in kinds:
                    selection = _deferred(selection, kind)
            elif isinstance(selection, InlineFragmentNode):
                if not any(d.name.value == "defer" for d in selection.directives or ()):
                    condition = selection.type_condition
                    inner = schema.get_type(condition.name.value) if condition else parent
                    selection = _copy(
                        selection, selection_set=selections(selection.selection_set, inner)
                    )
            elif isinstance(selection, FragmentSpreadNode):
                # its definition is rewritten once, under its type condition
                name = selection.name.value
                definition = fragments.get(name)
                if definition is not None and name not in rewritten:
                    rewritten[name] = definition  # a cycle would be refused by validation
                    inner = schema.get_type(definition.type_condition.name.value)
                    rewritten[name] = _copy(
                        definition, selection_set=selections(definition.selection_set, inner)
                    )
            changed.append(selection)
        copied: SelectionSetNode = _copy(node, selections=tuple(changed))
        return copied

    root = schema.query_type
    new_operation = _copy(operation, selection_set=selections(operation.selection_set, root))
    definitions = []
    for definition in document.definitions:
        if definition is operation:
            definition = new_operation
        elif isinstance(definition, FragmentDefinitionNode):
            definition = rewritten.get(definition.name.value, definition)
        definitions.append(definition)
    return DocumentNode(definitions=tuple(definitions))


def _field_type(parent: Any, name: str) -> Any:
    if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        return None
    field = parent.fields.get(name)
    return get_named_type(field.type) if field is not None else None


def _deferred(field: FieldNode, kind: str) -> InlineFragmentNode:
    label = ArgumentNode(
        name=NameNode(value="label"), value=StringValueNode(value=_SOFT_LABEL + kind)
    )
    return InlineFragmentNode(
        type_condition=None,
        directives=(DirectiveNode(name=NameNode(value="defer"), arguments=(label,)),),
        selection_set=SelectionSetNode(selections=(field,)),
    )


def _copy(node: Any, **changes: Any) -> Any:
    """A copy of an AST node with some of its attributes replaced."""
    values = {key: getattr(node, key) for key in node.keys}
    values.update(changes)
    return type(node)(**values)


# -- the payloads -------------------------------------------------------------------------


class IncrementalAnswer:
    """One operation's incremental results: the first payload (`first`), the later ones
    (`rest`), and the whole answer merged (`merged`, once the last was taken)."""

    def __init__(
        self,
        results: ExperimentalIncrementalExecutionResults,
        wire: WireFormat,
        format_error: FormatError,
        stale: list[dict[str, Any]],
        *,
        soft_deadlines: Mapping[str, float] | None = None,
        started: float | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        self.wire = wire
        self.format_error = format_error
        self.stale = stale  # the request's stale notes (Context.stale), growing as parts run
        self.soft_deadlines = soft_deadlines or {}
        self.started = time.monotonic() if started is None else started
        self.extensions = extensions or {}  # of the first payload and the merged answer
        self.data: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self.pending: dict[str, PendingResult] = {}
        self.has_next = True
        self._initial: InitialIncrementalExecutionResult = results.initial_result
        self._results: AsyncGenerator[SubsequentIncrementalExecutionResult, None] = (
            results.subsequent_results
        )
        self._held: SubsequentIncrementalExecutionResult | None = None  # see `first`
        self._reported = 0  # stale notes reported so far (a prefix of them, see _new_stale)
        self._unreported: list[dict[str, Any]] = []
        self._next: asyncio.Task[SubsequentIncrementalExecutionResult | None] | None = None
        # the later parts run in the context execution started in (its deferred cache
        # fills among it), not in that of whoever takes the payloads
        self._context = contextvars.copy_context()

    # -- what the transports call ---------------------------------------------------------

    async def first(self) -> dict[str, Any]:
        """The first payload: the initial part with every part already done, and parts
        deferred by a soft deadline that finish within it. `has_next` says whether more
        follow; when not, this is the whole answer in the plain response's shape."""
        initial = self._initial
        self.data = initial.data
        self.errors.extend(self.format_error(e) for e in initial.errors or ())
        for pending in initial.pending:
            self.pending[pending.id] = pending
        self.has_next = initial.has_next
        while self.has_next:
            result = await self._take(self._soft_wait())
            if result is None:
                break
            if any(not isinstance(e, IncrementalDeferResult) for e in result.incremental or ()):
                # a stream's items: the client asked for its first items first, so they
                # (and what came with them) go in a later payload, even when ready now
                self._held = result
                break
            self._absorb(result)
        if not self.has_next:
            return self.merged()
        payload: dict[str, Any] = {}
        if self.errors:
            payload["errors"] = list(self.errors)
        # a copy: the later parts are merged into the answer, not into what was sent
        payload["data"] = _copied(self.data)
        if self.wire is WireFormat.INCREMENTAL_V02:
            payload["pending"] = [self._pending(p) for p in self.pending.values()]
        payload["hasNext"] = True
        stale = self._new_stale()
        extensions = {"stale": stale} if stale else {}
        extensions.update(self.extensions)
        if extensions:
            payload["extensions"] = extensions
        return payload

    async def rest(self) -> AsyncIterator[dict[str, Any]]:
        """The payloads after the first, each encoded as its wire format says."""
        try:
            while self.has_next:
                result, self._held = self._held, None
                if result is None:
                    result = await self._take(None)
                if result is None:
                    break
                yield self._payload(result)
        finally:
            await self.aclose()

    def merged(self) -> dict[str, Any]:
        """The whole answer in the plain response's shape (every part taken)."""
        response: dict[str, Any] = {}
        if self.errors:
            response["errors"] = self.errors
        response["data"] = self.data
        extensions = {"stale": self.stale} if self.stale else {}
        extensions.update(self.extensions)
        if extensions:
            response["extensions"] = extensions
        return response

    async def merge_all(self) -> dict[str, Any]:
        """Every payload taken and merged: the plain response."""
        await self.first()
        async for _payload in self.rest():
            pass
        return self.merged()

    async def aclose(self) -> None:
        """Stop executing the parts not delivered (the client went away)."""
        self.has_next = False
        taking, self._next = self._next, None
        if taking is not None and not taking.done():
            taking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await taking  # the generator is free to close once its step has ended
        await self._results.aclose()

    # -- taking graphql-core's results ----------------------------------------------------

    async def _take(self, wait: float | None) -> SubsequentIncrementalExecutionResult | None:
        """The next subsequent result: waiting for it (`wait` None), for `wait` seconds,
        or (0) only for a few loop turns. None when it is not there in time or there is
        no more."""
        if self._next is None:
            self._next = asyncio.create_task(_next_or_none(self._results), context=self._context)
        future = self._next
        if wait is None:
            await asyncio.wait({future})
        elif wait > 0:
            await asyncio.wait({future}, timeout=wait)
        else:
            for _ in range(_READY_TURNS):
                if future.done():
                    break
                await asyncio.sleep(0)
        if not future.done():
            return None
        self._next = None
        result = future.result()
        if result is None:
            self.has_next = False
        return result

    def _soft_wait(self) -> float:
        """Seconds until the nearest deadline of a pending soft-deferred part still within
        its own; 0 when there is none (then only parts already done are taken)."""
        now = time.monotonic()
        waits = [
            self.started + self.soft_deadlines.get(kind, 0.0) - now
            for pending in self.pending.values()
            if (kind := _soft_kind(pending)) is not None
        ]
        waits = [w for w in waits if w > 0]
        return min(waits) if waits else 0.0

    def _absorb(self, result: SubsequentIncrementalExecutionResult) -> None:
        """A subsequent result taken into the first payload: its data merged in place."""
        for pending in result.pending or ():
            self.pending[pending.id] = pending
        for entry in result.incremental or ():
            base = self._base(entry.id, entry.sub_path)
            if isinstance(entry, IncrementalDeferResult):
                self._merge(base, entry.data)
            else:
                self._extend(base, entry.items)
            self.errors.extend(self.format_error(e) for e in entry.errors or ())
        for completed in result.completed or ():
            self._complete(completed)
        self.has_next = result.has_next

    def _payload(self, result: SubsequentIncrementalExecutionResult) -> dict[str, Any]:
        """A later payload in the wire format, its data merged into the whole answer."""
        v02 = self.wire is WireFormat.INCREMENTAL_V02
        payload: dict[str, Any] = {}
        announced = []
        for pending in result.pending or ():
            self.pending[pending.id] = pending
            announced.append(self._pending(pending))
        if v02 and announced:
            payload["pending"] = announced
        entries: list[dict[str, Any]] = []
        regions: list[tuple[Path, dict[str, Any], Any]] = []
        for entry in result.incremental or ():
            base = self._base(entry.id, entry.sub_path)
            errors = [self.format_error(e) for e in entry.errors or ()]
            self.errors.extend(errors)
            formatted: dict[str, Any]
            if isinstance(entry, IncrementalDeferResult):
                self._merge(base, entry.data)
                formatted = {"data": entry.data}
                region: Any = entry.data
                if not v02:
                    formatted["path"] = base
            else:
                start = self._extend(base, entry.items)
                formatted = {"items": entry.items}
                region = range(start, start + len(entry.items))
                if not v02:
                    formatted["path"] = [*base, start]
            if v02:
                formatted["id"] = entry.id
                if entry.sub_path:
                    formatted["subPath"] = entry.sub_path
            else:
                label = self._label(self.pending.get(entry.id))
                if label is not None:
                    formatted["label"] = label
            if errors:
                formatted["errors"] = errors
            entries.append(formatted)
            regions.append((base, formatted, region))
        completed_v02 = []
        for completed in result.completed or ():
            finished = self.pending.get(completed.id)
            errors = [self.format_error(e) for e in completed.errors or ()]
            self.errors.extend(errors)
            if v02:
                done: dict[str, Any] = {"id": completed.id}
                if errors:
                    done["errors"] = errors
                completed_v02.append(done)
            elif errors and finished is not None:
                # the part failed as a whole (a non-null field nulled its fragment)
                failed: dict[str, Any]
                if self._is_stream(finished):
                    failed = {"items": None, "path": [*finished.path, self._length(finished)]}
                else:
                    failed = {"data": None, "path": list(finished.path)}
                label = self._label(finished)
                if label is not None:
                    failed["label"] = label
                failed["errors"] = errors
                entries.append(failed)
            self._complete(completed)
        self.has_next = result.has_next
        self._attach_stale(regions, entries, payload)
        if entries:
            payload["incremental"] = entries
        if v02 and completed_v02:
            payload["completed"] = completed_v02
        payload["hasNext"] = result.has_next
        return payload

    # -- bookkeeping ----------------------------------------------------------------------

    def _base(self, pending_id: str, sub_path: Path | None) -> Path:
        pending = self.pending[pending_id]
        return [*pending.path, *(sub_path or ())]

    def _merge(self, path: Path, data: dict[str, Any]) -> None:
        """A deferred part's data into the whole answer (a copy: the part's own payload
        stays as it was sent)."""
        target = self._at(path)
        if isinstance(target, dict):
            _deep_merge(target, _copied(data))

    def _extend(self, path: Path, items: list[Any]) -> int:
        """A stream's items appended to its list in the whole answer (copies); answers the
        index of the first."""
        target = self._at(path)
        if not isinstance(target, list):
            return 0
        start = len(target)
        target.extend(_copied(items))
        return start

    def _at(self, path: Path) -> Any:
        node: Any = self.data
        for key in path:
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    def _length(self, pending: PendingResult) -> int:
        target = self._at(list(pending.path))
        return len(target) if isinstance(target, list) else 0

    def _is_stream(self, pending: PendingResult) -> bool:
        # a stream's pending path ends at its list; a deferred fragment's at an object
        return isinstance(self._at(list(pending.path)), list)

    def _complete(self, completed: CompletedResult) -> None:
        self.pending.pop(completed.id, None)

    def _pending(self, pending: PendingResult) -> dict[str, Any]:
        formatted: dict[str, Any] = {"id": pending.id, "path": list(pending.path)}
        label = self._label(pending)
        if label is not None:
            formatted["label"] = label
        return formatted

    @staticmethod
    def _label(pending: PendingResult | None) -> str | None:
        if pending is None or pending.label is None or _soft_kind(pending) is not None:
            return None
        return pending.label

    # -- stale notes ----------------------------------------------------------------------

    def _new_stale(self) -> list[dict[str, Any]]:
        """The stale notes of fields delivered by now and not yet reported."""
        self._unreported.extend(self.stale[self._reported :])
        self._reported = len(self.stale)
        delivered = [n for n in self._unreported if self._at(n["path"]) is not None]
        if not self.has_next:
            delivered = self._unreported  # the last payload reports whatever is left
        self._unreported = [n for n in self._unreported if n not in delivered]
        return delivered

    def _attach_stale(
        self,
        regions: list[tuple[Path, dict[str, Any], Any]],
        entries: list[dict[str, Any]],
        payload: dict[str, Any],
    ) -> None:
        """Each newly delivered stale note on the entry whose data holds its field (where
        Apollo Client reads a part's extensions), else on the payload."""
        for note in self._new_stale():
            path = note["path"]
            holder = next(
                (
                    formatted
                    for base, formatted, region in regions
                    if path[: len(base)] == base
                    and len(path) > len(base)
                    and path[len(base)] in region
                ),
                entries[0] if entries else None,
            )
            if holder is None:
                holder = payload
            holder.setdefault("extensions", {}).setdefault("stale", []).append(note)


async def _next_or_none(
    results: AsyncGenerator[SubsequentIncrementalExecutionResult, None],
) -> SubsequentIncrementalExecutionResult | None:
    try:
        return await anext(results)
    except StopAsyncIteration:
        return None


def _soft_kind(pending: PendingResult) -> str | None:
    label = pending.label
    if label is not None and label.startswith(_SOFT_LABEL):
        return label[len(_SOFT_LABEL) :]
    return None


def _copied(value: Any) -> Any:
    """A deep copy of JSON data (orjson both ways: several times faster than deepcopy)."""
    return orjson.loads(orjson.dumps(value))


def _deep_merge(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _deep_merge(current, value)
        else:
            target[key] = value
