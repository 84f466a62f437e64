"""The REST facade at /api (docs/design.md §5a): endpoints defined as GraphQL operations."""

from gateway.rest.endpoint import RestEndpoint
from gateway.rest.openapi import openapi_document
from gateway.rest.operations import OPERATIONS, RestOperation

__all__ = ["OPERATIONS", "RestEndpoint", "RestOperation", "openapi_document"]
