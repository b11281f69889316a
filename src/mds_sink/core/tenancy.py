"""Which tenant a record claims besides its value: its topic, its key, its headers (pure).

The value's `tenant_id` decides where a row goes. A producer that may write a topic can put any id
there, so the sink also checks what else names a tenant, and dead-letters a record whose claims
differ (`tenant_mismatch`), before anything is written:

- tenant-scoped topics (`topics.tenant_topics`): the topic of tenant T for data type `mds.bars` is
  `mds.T.bars`, subscribed by pattern. With the broker's ACLs granting each tenant's producer its own
  prefix `mds.T.` only, the topic proves who produced the record: the value must name T.
- the key: the sink's producers key records `tenant|vendor|symbol`. A key whose first field is a
  tenant id must name the value's tenant. Keys that name no tenant (free-form keys) are not checked.
- the headers `mds.tenant_id` or `tenant_id`, when present, must name the value's tenant.

In the shared-topic mode the key and headers come from the same producer as the value: the check
catches a producer's mistakes (a key built for one tenant, a value of another), not a hostile one.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mds_sink.core.rejection import Rejection

CODE = "tenant_mismatch"
TENANT_HEADERS = ("mds.tenant_id", "tenant_id")
_UUID_LENGTH = 36


@functools.lru_cache(maxsize=4096)  # every record's key names its tenant: a handful of ids, parsed once
def _canonical(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TenantTopics:
    """Tenant-scoped topics: base topic `prefix.name` (a `topics.<type>` setting) -> `prefix.<tenant>.name`."""

    bases: tuple[str, ...]

    @staticmethod
    def split(base: str) -> tuple[str, str]:
        prefix, dot, name = base.rpartition(".")
        return (prefix, name) if dot else ("", base)

    def topic(self, base: str, tenant: str) -> str:
        prefix, name = self.split(base)
        return f"{prefix}.{tenant}.{name}" if prefix else f"{tenant}.{name}"

    def pattern(self, base: str) -> str:
        """A subscription regex (librdkafka's: no counted repetition) of the base's tenant topics."""
        prefix, name = self.split(base)
        head = re.escape(prefix) + r"\." if prefix else ""
        return f"^{head}[0-9a-f-]+\\.{re.escape(name)}$"

    def prefix(self, base: str, tenant: str) -> str:
        """What a tenant's producer may write: the ACL prefix of its topics of this base (`mds.T.`)."""
        return self.topic(base, tenant)[: -len(self.split(base)[1])]

    def route(self, topic: str) -> tuple[str, str] | None:
        """(base topic, tenant) of a tenant topic; tenant "" if the name between holds no valid id."""
        for base in self.bases:
            prefix, name = self.split(base)
            head = f"{prefix}." if prefix else ""
            tail = f".{name}"
            if topic.startswith(head) and topic.endswith(tail) and len(topic) > len(head) + len(tail):
                middle = topic[len(head) : len(topic) - len(tail)]
                if "." in middle:
                    continue
                return base, (_canonical(middle) or "")
        return None


def mismatch(tenant: str, claim: str, where: str) -> Rejection:
    message = f"the record is of tenant {tenant} but its {where} names tenant {claim or '(none)'}"
    return Rejection("validate", CODE, message, "tenant_id")


def key_tenant(key: bytes | None) -> str | None:
    """The tenant a key `tenant|...` names; None for a key that names none (no id in its first field)."""
    if not key:
        return None
    first = key.split(b"|", 1)[0]
    if len(first) != _UUID_LENGTH:
        return None
    return _canonical(first.decode("ascii", "replace"))


Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]


def header_tenants(headers: Headers | None) -> list[str]:
    """The values of the tenant headers, as text ("" for one that is empty or not text)."""
    found: list[str] = []
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name in TENANT_HEADERS:
            raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")
            found.append(_canonical(raw.strip()) or raw)
    return found


def check(
    tenant: str,
    *,
    topic_tenant: str | None,
    key: bytes | None,
    headers: Headers | None,
) -> Rejection | None:
    """None when nothing names another tenant than the value's (canonical) `tenant`."""
    if topic_tenant is not None and topic_tenant != tenant:
        return mismatch(tenant, topic_tenant, "topic")
    claimed = key_tenant(key)
    if claimed is not None and claimed != tenant:
        return mismatch(tenant, claimed, "key")
    for claimed_by_header in header_tenants(headers) if headers else ():
        if claimed_by_header != tenant:
            return mismatch(tenant, claimed_by_header, "header")
    return None


def tenant_topics(routes: Mapping[str, object], enabled: bool) -> TenantTopics | None:
    return TenantTopics(tuple(routes)) if enabled else None
