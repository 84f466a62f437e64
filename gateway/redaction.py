"""Keeps credentials out of log lines: a logging.Filter that rewrites each record.

Two nets: patterns for what credentials look like (bearer tokens, JWTs, provider key
prefixes, `name=value` pairs whose name says secret, signature headers, passwords in URLs)
and the exact values this gateway was configured with (every `SecretStr` of Settings, the
service API keys, the dev-token secret), which no pattern could know.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "RedactionFilter", "Redactor", "settings_secrets"]

REDACTED = "[REDACTED]"

# Shorter configured values are not redacted as literals: they would blank out ordinary
# words, and a secret that short protects nothing anyway.
MIN_SECRET_LENGTH = 6

_NAMES = (
    r"x[-_]api[-_]key|api[-_]?key|apikey|access[-_]?token|refresh[-_]?token|id[-_]?token"
    r"|client[-_]?secret|secret|password|passwd|authorization|proxy-authorization"
    r"|signature|x-amz-signature|x-amz-credential|x-amz-security-token|stripe-signature"
    r"|x-hubspot-signature(?:-v3)?|x-zendesk-webhook-signature|x-xero-signature"
    r"|intuit-signature|cookie|set-cookie"
)
# (pattern, replacement, gate): a pattern runs only on text whose lower-cased form holds
# one of its gate's substrings, which keeps the filter cheap on ordinary lines.
_PATTERNS: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    # name: value / name=value, the value up to a delimiter ("Authorization: Bearer x" whole)
    (
        re.compile(
            rf"(?i)(\b(?:{_NAMES})\b[\"']?\s*[:=]\s*[\"']?)"
            r"(?!\[REDACTED)((?:bearer|basic)\s+)?[^\s\"'&,;}}\]]+"
        ),
        r"\1" + REDACTED,
        ("key", "token", "secret", "passw", "authoriz", "signature", "credential", "cookie"),
    ),
    (
        re.compile(r"(?i)\b(bearer|basic)\s+(?!\[REDACTED)[A-Za-z0-9\-._~+/]{6,}=*"),
        r"\1 " + REDACTED,
        ("bearer", "basic"),
    ),
    # JWTs: base64url header (always '{"' -> eyJ), payload, signature
    (
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        REDACTED,
        ("eyj",),
    ),
    # Stripe secret, restricted and publishable keys and webhook secrets; HubSpot private
    # app tokens; AWS access key ids
    (
        re.compile(
            r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{6,}|\bwhsec_[A-Za-z0-9+/=]{6,}"
            r"|\bpat-[a-z]{2}\d-[0-9a-f-]{16,}|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
        ),
        REDACTED,
        ("_live_", "_test_", "whsec_", "pat-", "akia", "asia"),
    ),
    # signature components: Stripe's v1=<hex>, sha256=<hex>
    (
        re.compile(r"(?i)\b(v[01]|sha(?:1|256|512))=[0-9a-f]{16,}"),
        r"\1=" + REDACTED,
        ("v0=", "v1=", "sha"),
    ),
    # passwords in URLs: redis://:pw@host, amqp://user:pw@host
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@"),
        r"\1" + REDACTED + "@",
        ("://",),
    ),
]
_GATES = [re.compile("|".join(map(re.escape, gate))) for _p, _r, gate in _PATTERNS]
_ANY_GATE = re.compile("|".join(re.escape(word) for *_pr, gate in _PATTERNS for word in gate))
_SENSITIVE_KEY = re.compile(
    r"(?i)token|secret|password|passwd|authorization|api[-_]?key|signature|cookie|credential"
)
_sensitive_names: dict[str, bool] = {}


def _sensitive(name: str) -> bool:
    """Whether a field named so holds a credential (answers cached: names repeat)."""
    known = _sensitive_names.get(name)
    if known is None:
        known = _SENSITIVE_KEY.search(name) is not None
        if len(_sensitive_names) < 4096:
            _sensitive_names[name] = known
    return known


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_EXCEPTIONS = logging.Formatter()


class Redactor:
    """Rewrites text and structured values with every credential replaced by [REDACTED]."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, known))) if known else None

    def text(self, text: str) -> str:
        if len(text) < MIN_SECRET_LENGTH:
            return text
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        lower = text.lower()
        if _ANY_GATE.search(lower) is None:
            return text
        for (pattern, replacement, _words), gate in zip(_PATTERNS, _GATES, strict=True):
            if gate.search(lower) is not None:
                text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any, depth: int = 0) -> Any:
        """A log record's extra value, redacted; containers walked a few levels deep."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value)
        if depth < 4:
            if isinstance(value, dict):
                return {
                    k: REDACTED
                    if isinstance(k, str) and _sensitive(k) and v
                    else self.value(v, depth + 1)
                    for k, v in value.items()
                }
            if isinstance(value, list | tuple | set | frozenset):
                return [self.value(v, depth + 1) for v in value]
        if isinstance(value, bytes | bytearray):
            return self.text(bytes(value).decode("utf-8", "replace"))
        return self.text(str(value))


class RedactionFilter(logging.Filter):
    """Redacts message, arguments, extras and traceback of every record the handler emits."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self.redactor
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it; show the template only
            message = str(record.msg)
        record.msg = redactor.text(message)
        record.args = None
        fields = record.__dict__
        for key in fields.keys() - _RESERVED:  # the extras
            value = fields[key]
            if value is None or type(value) is int or key.startswith("_"):
                continue
            if _sensitive(key) and value:
                fields[key] = REDACTED
            else:
                fields[key] = redactor.value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTIONS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.text(record.stack_info)
        return True


def settings_secrets(settings: Any) -> list[str]:
    """Every secret value a Settings object holds: SecretStr fields, lists of them."""
    from pydantic import SecretStr

    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        values = value if isinstance(value, list | tuple) else [value]
        found.extend(v.get_secret_value() for v in values if isinstance(v, SecretStr))
    return found
