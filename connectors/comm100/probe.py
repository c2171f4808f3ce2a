"""``contactsync probe`` for Comm100: measure each inferred behaviour (behaviours.py) with
throwaway contacts whose name carries the probe's marker. Only contacts this probe created are
written or deleted (they are deleted at the end, whatever happens); other contacts are only
listed (read).
"""

from __future__ import annotations

from typing import Any

from connectors.base import ConnectorError, RecordError
from connectors.comm100.api import CONTACTS, contact_path, parse_time
from connectors.comm100.behaviours import (
    IDENTITY_VALUES,
    LIST_PAGING,
    LIST_SHAPE,
    PUT_IDENTITIES,
    PUT_SEMANTICS,
    UNDOCUMENTED_FIELDS,
)
from connectors.comm100.client import Comm100Connector
from connectors.probing import Finding

JSON = dict[str, Any]


def _email(marker: str, n: int) -> str:
    return f"{marker}-{n}@example.com"


def _values(contact: JSON) -> set[str]:
    return {str(i.get("value") or "").lower() for i in contact.get("contactIdentities") or []}


async def probe(connector: Comm100Connector, *, marker: str) -> list[Finding]:
    http = connector.http
    created: list[str] = []
    findings: list[Finding] = []

    async def get(contact_id: str) -> JSON:
        body = await http.json("GET", contact_path(contact_id), params={"include": "contactIdentity"})
        assert isinstance(body, dict)
        return body

    async def create(n: int, **extra: Any) -> JSON:
        body = {
            "name": f"{marker} {n}",
            "firstName": marker,
            "lastName": f"probe{n}",
            "contactIdentities": [{"contactIdentityType": "Email", "value": _email(marker, n)}],
            **extra,
        }
        made = await http.json("POST", CONTACTS, json_body=body, idempotent=False)
        assert isinstance(made, dict) and made.get("id")
        created.append(str(made["id"]))
        return made

    try:
        first = await create(1, company=f"{marker} company", phone="+14155550123")
        cid = str(first["id"])
        held = await get(cid)
        stored = held.get("company") == f"{marker} company" and bool(held.get("phone"))
        findings.append(
            Finding(
                UNDOCUMENTED_FIELDS,
                "stored" if stored else "ignored",
                f"POST with company and phone; read back company={held.get('company')!r} phone={held.get('phone')!r}",
            )
        )

        # PUT without lastName and without identities: kept (merge) or cleared (replace)?
        await http.json("PUT", contact_path(cid), json_body={"name": f"{marker} 1", "firstName": marker})
        held = await get(cid)
        replaced = not held.get("lastName")
        findings.append(
            Finding(
                PUT_SEMANTICS,
                "replace" if replaced else "merge",
                f"PUT without lastName; read back lastName={held.get('lastName')!r}, "
                f"{len(held.get('contactIdentities') or [])} identities",
            )
        )

        # Identities: the contact holds email 1; a PUT sending email 2 only.
        full = {"name": f"{marker} 1", "firstName": marker, "lastName": "probe1"}
        await http.json(
            "PUT",
            contact_path(cid),
            json_body={**full, "contactIdentities": [{"contactIdentityType": "Email", "value": _email(marker, 1)}]},
        )
        await http.json(
            "PUT",
            contact_path(cid),
            json_body={**full, "contactIdentities": [{"contactIdentityType": "Email", "value": _email(marker, 2)}]},
        )
        held = await get(cid)
        values = _values(held)
        extended = _email(marker, 1) in values
        findings.append(
            Finding(
                PUT_IDENTITIES,
                "extend" if extended else "replace",
                f"contact held {_email(marker, 1)}, PUT sent {_email(marker, 2)} only; now holds {sorted(values)}",
            )
        )

        # The same identity value on a second contact: refused or accepted?
        try:
            await create(2, contactIdentities=[{"contactIdentityType": "Email", "value": _email(marker, 2)}])
            findings.append(
                Finding(IDENTITY_VALUES, "shared", f"a second contact was created with {_email(marker, 2)}")
            )
        except RecordError as exc:
            findings.append(
                Finding(IDENTITY_VALUES, "unique", f"a second contact with {_email(marker, 2)} was refused: {exc}")
            )

        # Touch the probe contact last, then list newest-first, one per page.
        await http.json("PUT", contact_path(cid), json_body={**full, "lastName": "probe1b"})
        response = await http.request(
            "GET",
            CONTACTS,
            params={"pageIndex": 1, "pageSize": 1, "sortBy": "lastUpdatedTime", "sortOrder": "desc"},
        )
        body = response.json()
        shape = "array" if isinstance(body, list) else "object"
        findings.append(
            Finding(
                LIST_SHAPE,
                shape,
                "GET /global/contacts answered a bare array"
                if shape == "array"
                else f"GET /global/contacts answered an object with keys {sorted(body)}",
            )
        )
        items = body if isinstance(body, list) else (body.get("contacts") or [])
        if len(items) == 1 and str(items[0].get("id")) == cid:
            paging, why = "honoured", "pageSize=1 sorted lastUpdatedTime desc gave the contact just updated"
        else:
            times = [parse_time(c["lastUpdatedTime"]) for c in items if c.get("lastUpdatedTime")]
            created_times = [parse_time(c["createTime"]) for c in items if c.get("createTime")]
            ascending = created_times == sorted(created_times)
            paging = "ignored_oldest_first" if ascending else "ignored_arbitrary"
            why = (
                f"pageSize=1 sorted lastUpdatedTime desc gave {len(items)} contacts, "
                f"{'oldest created first' if ascending else 'in no creation order'}"
                f"{'' if times == sorted(times, reverse=True) else ', not newest-updated first'}"
            )
        findings.append(Finding(LIST_PAGING, paging, why))
    finally:
        for contact_id in reversed(created):
            try:
                await http.request("DELETE", contact_path(contact_id))
            except ConnectorError:
                pass
    return findings
