"""The REST facade's operations: each endpoint is one GraphQL document of the schema.

An endpoint names its document, where its resource sits in the answer's `data`, and how the
request's path, query string, body and headers become the document's variables. Nothing
here knows a provider or a rule of the domain: the resolvers decide what a caller may see
and change, as they do for /graphql.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphql import OperationType

__all__ = ["OPERATIONS", "RestOperation", "Route", "match"]

CUSTOMER = "id name email company phone"
SUBSCRIPTIONS = "subscriptions { id status plan currentPeriodEnd cancelAtPeriodEnd }"
INVOICE = (
    "id number status currency total amountDue amountPaid createdAt dueDate paidAt "
    "hostedUrl pdfUrl source"
)
TICKET = "id subject description status priority createdAt updatedAt"
DOCUMENT = "id name size contentType uploadedAt downloadUrl"
PAGE = "totalCount pageInfo { hasNextPage endCursor } edges { node { %s } }"


@dataclass(frozen=True, slots=True)
class RestOperation:
    """One endpoint: `method` on `path` runs the operation `name` of `document`."""

    name: str
    method: str
    path: str  # a template: `{id}` is one path segment, the document's $id
    summary: str
    document: str
    result: tuple[str, ...]  # where the resource sits in `data`
    kind: OperationType = OperationType.QUERY
    page: bool = False  # a connection: answered as items, totalCount, pageInfo and a Link
    filters: tuple[str, ...] = ()  # more query parameters, each the variable of its name
    body: str | None = None  # the variable the JSON body is
    idempotency_field: str | None = None  # the body's field the Idempotency-Key header fills
    own_id: bool = False  # the path's {id} must be the signed-in customer's own
    success: int = 200  # 201 answers a Location; 204 no body
    location: str | None = None  # the created resource's path, `{id}` its id
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.strip("/").split("/")))


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path matched: the operations by method, and the path's id."""

    operations: dict[str, RestOperation]
    id: str | None


def _page(name: str, connection: str, node: str, status: str | None = None) -> str:
    """A page of the customer's `connection`, filtered by a `status` enum where one is named."""
    declared = f", $status: {status}" if status else ""
    arguments = "first: $first, after: $after" + (", status: $status" if status else "")
    return (
        f"query {name}($id: ID!, $first: Int = 20, $after: String{declared}) "
        f"{{ customer(id: $id) {{ {connection}({arguments}) {{ {PAGE % node} }} }} }}"
    )


OPERATIONS: tuple[RestOperation, ...] = (
    RestOperation(
        name="RestMe",
        method="GET",
        path="/api/me",
        summary="The signed-in customer, with its billing subscriptions",
        document=f"query RestMe {{ me {{ {CUSTOMER} {SUBSCRIPTIONS} }} }}",
        result=("me",),
    ),
    RestOperation(
        name="RestCustomer",
        method="GET",
        path="/api/customers/{id}",
        summary="A customer (staff, services, or the customer itself)",
        document=(
            f"query RestCustomer($id: ID!) {{ customer(id: $id) {{ {CUSTOMER} {SUBSCRIPTIONS} }} }}"
        ),
        result=("customer",),
    ),
    RestOperation(
        name="RestUpdateCustomer",
        method="PUT",
        path="/api/customers/{id}",
        summary="Change the signed-in customer's profile (the path's id must be its own)",
        document=(
            "mutation RestUpdateCustomer($input: UpdateProfileInput!) "
            f"{{ updateProfile(input: $input) {{ {CUSTOMER} }} }}"
        ),
        result=("updateProfile",),
        kind=OperationType.MUTATION,
        body="input",
        own_id=True,
    ),
    RestOperation(
        name="RestCustomerInvoices",
        method="GET",
        path="/api/customers/{id}/invoices",
        summary="A page of a customer's invoices, newest first",
        document=_page("RestCustomerInvoices", "invoices", INVOICE, "InvoiceStatus"),
        result=("customer", "invoices"),
        page=True,
        filters=("status",),
    ),
    RestOperation(
        name="RestCustomerTickets",
        method="GET",
        path="/api/customers/{id}/tickets",
        summary="A page of a customer's help-desk tickets",
        document=_page("RestCustomerTickets", "tickets", TICKET, "TicketStatus"),
        result=("customer", "tickets"),
        page=True,
        filters=("status",),
    ),
    RestOperation(
        name="RestCustomerDocuments",
        method="GET",
        path="/api/customers/{id}/documents",
        summary="A page of a customer's documents, each with a signed, time-limited link",
        document=_page("RestCustomerDocuments", "files", DOCUMENT),
        result=("customer", "files"),
        page=True,
    ),
    RestOperation(
        name="RestInvoice",
        method="GET",
        path="/api/invoices/{id}",
        summary="An invoice",
        document=f"query RestInvoice($id: ID!) {{ invoice(id: $id) {{ {INVOICE} }} }}",
        result=("invoice",),
    ),
    RestOperation(
        name="RestTicket",
        method="GET",
        path="/api/tickets/{id}",
        summary="A help-desk ticket",
        document=f"query RestTicket($id: ID!) {{ ticket(id: $id) {{ {TICKET} }} }}",
        result=("ticket",),
    ),
    RestOperation(
        name="RestCreateTicket",
        method="POST",
        path="/api/tickets",
        summary="Open a ticket as the signed-in customer; a retry with the same "
        "Idempotency-Key creates nothing new",
        document=(
            "mutation RestCreateTicket($input: CreateTicketInput!) "
            f"{{ createTicket(input: $input) {{ ticket {{ {TICKET} }} }} }}"
        ),
        result=("createTicket", "ticket"),
        kind=OperationType.MUTATION,
        body="input",
        idempotency_field="clientMutationId",
        success=201,
        location="/api/tickets/{id}",
    ),
    RestOperation(
        name="RestDeleteDocument",
        method="DELETE",
        path="/api/documents/{id}",
        summary="Delete one of the signed-in customer's documents",
        document=(
            "mutation RestDeleteDocument($id: ID!) { deleteFile(id: $id) { deletedFileId } }"
        ),
        result=("deleteFile",),
        kind=OperationType.MUTATION,
        success=204,
    ),
)


def match(path: str, operations: tuple[RestOperation, ...] = OPERATIONS) -> Route | None:
    """The operations whose template `path` fits, by method; None when none does."""
    segments = path.strip("/").split("/")
    found: dict[str, RestOperation] = {}
    id_: str | None = None
    for operation in operations:
        template = operation.segments
        if len(template) != len(segments):
            continue
        bound: str | None = None
        for want, got in zip(template, segments, strict=True):
            if want == "{id}":
                if not got:
                    break
                bound = got
            elif want != got:
                break
        else:
            found[operation.method] = operation
            id_ = bound
    return Route(found, id_) if found else None
