"""The OpenAPI 3.1 document of the REST facade, generated from its operations and the schema.

Each endpoint's parameters come from its document's variable definitions, its request body
from the input type of its body variable, and its answer from a walk of its selection over
the schema's types: a field's JSON Schema is its GraphQL type's (non-null fields required,
nullable ones `null` too), so a change to the schema or a document changes the document.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    parse,
    type_from_ast,
)

from gateway.rest.operations import OPERATIONS, RestOperation
from gateway.rest.problems import PROBLEM_TYPE, TITLES

__all__ = ["openapi_document"]

JsonSchema = dict[str, Any]

_SCALARS: dict[str, JsonSchema] = {
    "ID": {"type": "string"},
    "String": {"type": "string"},
    "Int": {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1},
    "Float": {"type": "number"},
    "Boolean": {"type": "boolean"},
    "DateTime": {"type": "string", "format": "date-time"},
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_NOTES: JsonSchema = {
    "_missing": {
        "type": "array",
        "description": "Parts of a partial answer that could not be had, each a JSON Pointer "
        "into this body with the error's code and its GraphQL extensions.",
        "items": {
            "type": "object",
            "required": ["path", "code"],
            "properties": {
                "path": {"type": "string"},
                "code": {"type": "string"},
                "detail": {"type": ["string", "null"]},
            },
        },
    },
    "_stale": {
        "type": "array",
        "description": "Parts answered from the cache while their provider was down.",
        "items": {
            "type": "object",
            "required": ["path", "source", "age"],
            "properties": {
                "path": {"type": "string"},
                "source": {"type": "string"},
                "age": {"type": "number"},
            },
        },
    },
}


def _nullable(schema: JsonSchema) -> JsonSchema:
    kind = schema.get("type")
    if isinstance(kind, str):
        nullable = {**schema, "type": [kind, "null"]}
        if "enum" in schema:
            nullable["enum"] = [*schema["enum"], None]
        return nullable
    return {"anyOf": [schema, {"type": "null"}]}


def _leaf(named: GraphQLNamedType) -> JsonSchema:
    if isinstance(named, GraphQLEnumType):
        return {"type": "string", "enum": list(named.values)}
    if isinstance(named, GraphQLScalarType):
        return dict(_SCALARS.get(named.name, {}))
    raise TypeError(f"{named} is no leaf type")


def _output(kind: GraphQLOutputType, selection: SelectionSetNode | None) -> JsonSchema:
    """The JSON Schema of a value of `kind` with `selection` chosen from it."""
    if isinstance(kind, GraphQLNonNull):
        return _output_non_null(kind.of_type, selection)
    return _nullable(_output_non_null(kind, selection))


def _output_non_null(kind: Any, selection: SelectionSetNode | None) -> JsonSchema:
    if isinstance(kind, GraphQLList):
        return {"type": "array", "items": _output(kind.of_type, selection)}
    if isinstance(kind, GraphQLObjectType):
        assert selection is not None
        return _object(kind, selection)
    return _leaf(kind)


def _object(kind: GraphQLObjectType, selection: SelectionSetNode) -> JsonSchema:
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for node in selection.selections:
        assert isinstance(node, FieldNode), "the facade's documents select plain fields"
        name = node.alias.value if node.alias else node.name.value
        field = kind.fields[node.name.value]
        properties[name] = _output(field.type, node.selection_set)
        if field.description:
            properties[name]["description"] = field.description
        required.append(name)  # a nullable field is still there, as null
    return {"type": "object", "required": required, "properties": properties}


def _input(kind: GraphQLInputType) -> JsonSchema:
    if isinstance(kind, GraphQLNonNull):
        return _input_non_null(kind.of_type)
    return _nullable(_input_non_null(kind))


def _input_non_null(kind: Any) -> JsonSchema:
    if isinstance(kind, GraphQLList):
        return {"type": "array", "items": _input(kind.of_type)}
    if isinstance(kind, GraphQLInputObjectType):
        properties = {}
        required = []
        for name, field in kind.fields.items():
            properties[name] = _input(field.type)
            if field.description:
                properties[name]["description"] = field.description
            if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined:
                required.append(name)
        # an unknown field is refused (422) by the input's coercion, so none is allowed
        return {
            "type": "object",
            "required": required,
            "properties": properties,
            "additionalProperties": False,
        }
    return _leaf(kind)


def _resource(
    schema: GraphQLSchema, operation: RestOperation, definition: OperationDefinitionNode
) -> JsonSchema:
    """The schema of the answer's resource: the selection at the operation's result path."""
    root = schema.query_type if operation.kind is OperationType.QUERY else schema.mutation_type
    assert root is not None
    kind: Any = root
    selection: SelectionSetNode | None = definition.selection_set
    for key in operation.result:
        assert selection is not None
        node = next(
            n for n in selection.selections if isinstance(n, FieldNode) and n.name.value == key
        )
        kind = kind.fields[key].type
        while isinstance(kind, GraphQLNonNull | GraphQLList):
            kind = kind.of_type
        selection = node.selection_set
    assert isinstance(kind, GraphQLObjectType)
    assert selection is not None
    found = _object(kind, selection)
    if operation.page:
        properties = found["properties"]
        edges = properties["edges"]["items"]["properties"]
        found = {
            "type": "object",
            "required": ["items", "totalCount", "pageInfo"],
            "properties": {
                "items": {"type": "array", "items": edges["node"]},
                "totalCount": properties["totalCount"],
                "pageInfo": properties["pageInfo"],
            },
        }
    found["properties"].update(_NOTES)
    return found


def _parameters(
    schema: GraphQLSchema, operation: RestOperation, definition: OperationDefinitionNode
) -> list[JsonSchema]:
    parameters: list[JsonSchema] = []
    if "{id}" in operation.segments:
        parameters.append(
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                **({"description": "the signed-in customer's own id"} if operation.own_id else {}),
            }
        )
    for variable in definition.variable_definitions or ():
        name = variable.variable.name.value
        if name in (operation.body, "id"):
            continue
        kind = type_from_ast(schema, variable.type)
        assert kind is not None
        value = _input_non_null(kind.of_type if isinstance(kind, GraphQLNonNull) else kind)
        if name == "first":
            value["default"] = 20
        parameters.append({"name": name, "in": "query", "required": False, "schema": value})
    if operation.idempotency_field is not None:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": f"A retry with the same key creates nothing new "
                f"(the input's {operation.idempotency_field}).",
                "schema": {"type": "string"},
            }
        )
    return parameters


def _error_responses(operation: RestOperation) -> dict[str, Any]:
    statuses = [400, 401, 403, 404, 422, 429, 500, 502, 503]
    if operation.method != "GET":
        statuses.append(409)
    if operation.body is not None:
        statuses += [413, 415]
    retry = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
    responses: dict[str, Any] = {}
    for status in sorted(statuses):
        titles = sorted({title for s, title in TITLES.values() if s == status} or {"Error"})
        responses[str(status)] = {
            "description": "; ".join(titles) if status != 502 else "A provider answered in error",
            "content": {PROBLEM_TYPE: {"schema": _PROBLEM_REF}},
            **({"headers": retry} if status in (429, 503) else {}),
        }
    return responses


def _path_item(schema: GraphQLSchema, operation: RestOperation) -> dict[str, Any]:
    [definition] = parse(operation.document).definitions
    assert isinstance(definition, OperationDefinitionNode)
    success: dict[str, Any] = {"description": operation.summary}
    headers: dict[str, Any] = {}
    if operation.success != 204:
        success["content"] = {
            "application/json": {"schema": _resource(schema, operation, definition)}
        }
    if operation.method == "GET":
        headers["ETag"] = {"schema": {"type": "string"}}
    if operation.page:
        headers["Link"] = {
            "description": 'RFC 8288: the next page, rel="next", while there is one',
            "schema": {"type": "string"},
        }
    if operation.location is not None:
        headers["Location"] = {"schema": {"type": "string"}}
    if headers:
        success["headers"] = headers
    responses: dict[str, Any] = {str(operation.success): success}
    if operation.method == "GET":
        responses["304"] = {"description": "Not modified (If-None-Match)"}
    responses.update(_error_responses(operation))
    item: dict[str, Any] = {
        "operationId": operation.name,
        "summary": operation.summary,
        "description": f"Runs the GraphQL operation:\n\n```graphql\n{operation.document}\n```",
        "parameters": _parameters(schema, operation, definition),
        "responses": responses,
    }
    if operation.body is not None:
        body_variable = next(
            v
            for v in definition.variable_definitions or ()
            if v.variable.name.value == operation.body
        )
        kind = type_from_ast(schema, body_variable.type)
        assert kind is not None
        item["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _input_non_null(_named_input(kind))}},
        }
    return item


def _named_input(kind: Any) -> Any:
    return kind.of_type if isinstance(kind, GraphQLNonNull) else kind


def openapi_document(
    schema: GraphQLSchema, operations: tuple[RestOperation, ...] = OPERATIONS
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations` over `schema`."""
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _path_item(
            schema, operation
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "portal-gateway REST API",
            "version": "1",
            "description": "Each endpoint runs one GraphQL operation of the gateway's schema "
            "through the same pipeline as /graphql. Errors are RFC 9457 problem details "
            "whose `code` is GraphQL's `extensions.code`.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string", "enum": sorted(TITLES)},
                    },
                }
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
