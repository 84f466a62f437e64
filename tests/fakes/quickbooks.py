"""A stateful fake of QuickBooks Online's query endpoint over real HTTP.

    auth = FakeAuthorizationServer()
    fake = FakeQuickBooks(auth)                 # realm REALM, served under PREFIX
    with auth.running(), fake.running():
        QUICKBOOKS_API_BASE = fake.api_base     # fake.url + PREFIX: the path prefix is kept
        ada = fake.add_customer("Ada Lovelace", "ada@example.com")
        fake.add_invoice(ada, total="120.00", balance="20.00", txn_date=date(2026, 1, 5))
        fake.statements()                        # every query statement received

`GET {PREFIX}/v3/company/{REALM}/query?query=...` runs Intuit's query language for the
statements the gateway sends: `select * from Invoice|Customer|Payment [where F = 'v' | F in ('a',
'b') [and ...]] [orderby F [asc|desc], ...] [startposition N] [maxresults N]`, with string
literals escaped by backslash as Intuit documents. Statements are parsed by tokens, so a
value that escapes its quotes is a parse error (400), not a changed query. Answers are shaped
like Intuit's (`QueryResponse`, `Fault`); `InvoiceLink` only with `include=invoiceLink`.
An access token must be one the authorization server issued and has not expired (else 401
with Intuit's AuthenticationFailed fault). Guards of the gateway's own conventions: more
than 30 values in one `in (...)` or MAXRESULTS over 1,000 is refused (400).
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request

from tests.fakes.oauth import FakeAuthorizationServer
from tests.fakes.provider import Answer, Handler, StatefulFake

__all__ = ["PREFIX", "REALM", "FakeQuickBooks", "QueryError"]

REALM = "9341453201"
PREFIX = "/qbo-prefix"
MAX_IN = 30
MAX_RESULTS = 1000

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:\\.|[^'\\])*')|(?P<number>\d+)|(?P<word>[A-Za-z_][\w.]*)"
    r"|(?P<punct>[(),=*<>]))"
)
_CURRENCY_NAMES = {"USD": "United States Dollar", "EUR": "Euro", "GBP": "British Pound Sterling"}


class QueryError(Exception):
    """A statement the fake (like Intuit) cannot parse."""


class FakeQuickBooks(StatefulFake):
    provider = "quickbooks"

    def __init__(
        self,
        auth: FakeAuthorizationServer,
        *,
        realm: str = REALM,
        prefix: str = PREFIX,
        latency: float = 0.0,
    ) -> None:
        self.auth = auth
        self.realm = realm
        self.prefix = prefix
        self.customers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self._customer_ids = itertools.count(58)
        self._invoice_ids = itertools.count(130)
        self._payment_ids = itertools.count(9001)
        super().__init__(latency=latency)

    @property
    def api_base(self) -> str:
        return self.url + self.prefix

    # -- seeding -------------------------------------------------------------------------

    def add_customer(self, name: str, email: str | None = None) -> str:
        with self.lock:
            customer_id = str(next(self._customer_ids))
            record: dict[str, Any] = {
                "Id": customer_id,
                "SyncToken": "0",
                "DisplayName": name,
                "Active": True,
                "Balance": 0,
                "MetaData": {"CreateTime": "2025-06-01T10:00:00-07:00"},
            }
            if email is not None:
                record["PrimaryEmailAddr"] = {"Address": email}
            self.customers[customer_id] = record
            return customer_id

    def add_invoice(
        self,
        customer_id: str,
        *,
        total: str,
        balance: str | None = None,
        currency: str = "USD",
        txn_date: date = date(2026, 1, 5),
        due_date: date | None = None,
        number: str | None = None,
        voided: bool = False,
        link: bool = True,
        created: datetime | None = None,
        paid_on: date | None = None,
    ) -> str:
        """An invoice of `total` (major units, as a decimal string) with `balance` still
        owed (default: all of it); what was paid is one Payment on `paid_on` (default: the
        invoice date), linked both ways. `voided` zeroes it, as QuickBooks does."""
        with self.lock:
            invoice_id = str(next(self._invoice_ids))
            amount = Decimal(total)
            owed = amount if balance is None else Decimal(balance)
            if voided:
                amount = owed = Decimal(0)
            made = created or datetime.combine(txn_date, time(9, 0), tzinfo=UTC)
            record: dict[str, Any] = {
                "Id": invoice_id,
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": False,
                "DocNumber": number or str(1000 + int(invoice_id)),
                "TxnDate": txn_date.isoformat(),
                "CustomerRef": {
                    "value": customer_id,
                    "name": self.customers[customer_id]["DisplayName"],
                },
                "CurrencyRef": {"value": currency, "name": _CURRENCY_NAMES.get(currency, currency)},
                "TotalAmt": float(amount),
                "Balance": float(owed),
                "EmailStatus": "EmailSent",
                "MetaData": {
                    "CreateTime": made.isoformat(),
                    "LastUpdatedTime": (made + timedelta(hours=1)).isoformat(),
                },
                "Line": [],
                "LinkedTxn": [],
            }
            if owed < amount:
                payment_id = str(next(self._payment_ids))
                self.payments[payment_id] = {
                    "Id": payment_id,
                    "SyncToken": "0",
                    "TxnDate": (paid_on or txn_date).isoformat(),
                    "TotalAmt": float(amount - owed),
                    "CustomerRef": record["CustomerRef"],
                    "CurrencyRef": record["CurrencyRef"],
                    "Line": [
                        {
                            "Amount": float(amount - owed),
                            "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}],
                        }
                    ],
                }
                record["LinkedTxn"] = [{"TxnId": payment_id, "TxnType": "Payment"}]
            if due_date is not None:
                record["DueDate"] = due_date.isoformat()
            if voided:
                record["PrivateNote"] = "Voided"
            if link:
                record["_link"] = f"https://connect.intuit.example/portal/app/invoice/{invoice_id}"
            self.invoices[invoice_id] = record
            return invoice_id

    def reset(self) -> None:
        """Forget every record, call and fault (a module's fake, reused by each test)."""
        with self.lock:
            self.customers.clear()
            self.invoices.clear()
            self.payments.clear()
            self.calls.clear()
        self.clear_faults()

    def statements(self) -> list[str]:
        """The query statements received, in order."""
        return [call.param("query") or "" for call in self.calls_to("query")]

    # -- StatefulFake --------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, str, Handler]]:
        return [("query", "GET", f"{self.prefix}/v3/company/{{realm}}/query", self._query)]

    def authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and self.auth.accepts(header.removeprefix("Bearer "))

    def error_body(self, status: int) -> Any:
        faults = {
            400: ("ValidationFault", "4000", "Error parsing query"),
            401: (
                "AUTHENTICATION",
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
            ),
            403: ("AuthorizationFault", "003100", "message=ApplicationAuthorizationFailed"),
            404: ("SystemFault", "610", "Object Not Found"),
            429: ("SERVICE", "003001", "message=ThrottleExceeded; errorCode=003001"),
        }
        kind, code, message = faults.get(status, ("SystemFault", "10000", "An error occurred"))
        return {
            "Fault": {
                "Error": [{"Message": message, "Detail": message, "code": code}],
                "type": kind,
            },
            "time": datetime.now(UTC).isoformat(),
        }

    # -- the query endpoint --------------------------------------------------------------

    def _query(self, request: Request, _payload: Any) -> Answer:
        if request.path_params["realm"] != self.realm:
            return Answer(403, self.error_body(403))
        statement = request.query_params.get("query", "")
        try:
            entity, rows, start = self._run(statement)
        except QueryError as exc:
            body = self.error_body(400)
            body["Fault"]["Error"][0]["Detail"] = f"QueryParserError: {exc}"
            return Answer(400, body)
        with_link = request.query_params.get("include") == "invoiceLink"
        shown = [self._shown(row, with_link) for row in rows]
        answer: dict[str, Any] = {}
        if shown:
            answer = {entity: shown, "startPosition": start, "maxResults": len(shown)}
        return Answer(200, {"QueryResponse": answer, "time": datetime.now(UTC).isoformat()})

    @staticmethod
    def _shown(row: dict[str, Any], with_link: bool) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if not k.startswith("_")}
        if with_link and "_link" in row:
            out["InvoiceLink"] = row["_link"]
        return out

    def _run(self, statement: str) -> tuple[str, list[dict[str, Any]], int]:
        tokens = _tokens(statement)
        _expect(tokens, "select")
        _expect(tokens, "*")
        _expect(tokens, "from")
        entity = _take(tokens)
        table = {
            "Invoice": self.invoices,
            "Customer": self.customers,
            "Payment": self.payments,
        }.get(entity)
        if table is None:
            raise QueryError(f"unknown entity {entity}")
        rows = list(table.values())
        if _peek(tokens, "where"):
            tokens.pop(0)
            while True:
                field = _take(tokens)
                operator = _take(tokens).lower()
                if operator == "=":
                    values = [_literal(_take(tokens))]
                elif operator == "in":
                    values = _list(tokens)
                    if len(values) > MAX_IN:
                        raise QueryError(f"more than {MAX_IN} values in one IN list")
                else:
                    raise QueryError(f"operator {operator} is not supported by the fake")
                wanted = {v.lower() for v in values}
                rows = [row for row in rows if _value(row, field) in wanted]
                if not _peek(tokens, "and"):
                    break
                tokens.pop(0)
        if _peek(tokens, "orderby"):
            tokens.pop(0)
            keys: list[tuple[str, bool]] = []
            while True:
                field = _take(tokens)
                descending = False
                if _peek(tokens, "asc") or _peek(tokens, "desc"):
                    descending = tokens.pop(0).lower() == "desc"
                keys.append((field, descending))
                if not _peek(tokens, ","):
                    break
                tokens.pop(0)
            for field, descending in reversed(keys):
                rows.sort(key=lambda row, f=field: _value(row, f) or "", reverse=descending)
        start, limit = 1, 100
        if _peek(tokens, "startposition"):
            tokens.pop(0)
            start = int(_take(tokens))
        if _peek(tokens, "maxresults"):
            tokens.pop(0)
            limit = int(_take(tokens))
            if limit > MAX_RESULTS:
                raise QueryError(f"MAXRESULTS over {MAX_RESULTS}")
        if tokens:
            raise QueryError(f"unexpected {tokens[0]!r}")
        return entity, rows[start - 1 : start - 1 + limit], start


def _tokens(statement: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = statement.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise QueryError(f"cannot read the statement at {text[position : position + 10]!r}")
        tokens.append(match.group(match.lastgroup or "word"))
        position = match.end()
    return tokens


def _peek(tokens: list[str], word: str) -> bool:
    return bool(tokens) and tokens[0].lower() == word


def _expect(tokens: list[str], word: str) -> None:
    if not _peek(tokens, word):
        raise QueryError(f"expected {word}")
    tokens.pop(0)


def _take(tokens: list[str]) -> str:
    if not tokens:
        raise QueryError("the statement ends too early")
    return tokens.pop(0)


def _literal(token: str) -> str:
    if len(token) < 2 or token[0] != "'" or token[-1] != "'":
        raise QueryError(f"expected a quoted value, got {token!r}")
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def _list(tokens: list[str]) -> list[str]:
    _expect(tokens, "(")
    values = [_literal(_take(tokens))]
    while _peek(tokens, ","):
        tokens.pop(0)
        values.append(_literal(_take(tokens)))
    _expect(tokens, ")")
    return values


def _value(row: dict[str, Any], field: str) -> Any:
    """A field as the query language compares it: names and strings without regard to case
    (Intuit spells it both MetaData and Metadata), references by value, emails by address."""
    value: Any = row
    for part in field.split("."):
        if not isinstance(value, dict):
            return None
        value = next((v for k, v in value.items() if k.lower() == part.lower()), None)
    if isinstance(value, dict):
        value = value.get("value", value.get("Address"))
    return value.lower() if isinstance(value, str) else value
