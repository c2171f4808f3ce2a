"""``contactsync probe`` for Acquire: measure each inferred behaviour (behaviours.py) with
throwaway contacts whose name carries the probe's marker. Only contacts this probe created are
written, merged or deleted (deleted at the end, whatever happens); other contacts are only
listed (read).
"""

from __future__ import annotations

import secrets
from typing import Any

from connectors.acquire.api import CONTACTS, contact_path, merge_path
from connectors.acquire.behaviours import CUSTOM_ATTRIBUTES, MAX_LIMIT, MERGE_RESULT, PAGING_BASE, SEARCH
from connectors.acquire.client import AcquireConnector
from connectors.base import ConnectorError, RecordError
from connectors.probing import Finding

JSON = dict[str, Any]


async def probe(connector: AcquireConnector, *, marker: str) -> list[Finding]:
    http = connector.http
    created: list[int] = []
    findings: list[Finding] = []

    async def create(fields: JSON) -> JSON:
        body = await http.json("POST", CONTACTS, json_body={"fields": fields}, idempotent=False)
        data = body["data"]
        created.append(int(data["id"]))
        return data

    async def get(contact_id: int) -> JSON:
        body = await http.json("GET", contact_path(contact_id), params={"relations": "fields"})
        return dict(body["data"])

    async def listing(**params: Any) -> tuple[list[JSON], int | None]:
        body = await http.json("GET", CONTACTS, params={"relations": "fields", **params})
        data = body["data"]
        counts = data.get("counts") or {}
        return list(data.get("list") or []), counts.get("filteredCount")

    attribute = f"csprobe{secrets.token_hex(3)}"
    try:
        a = await create({"name": f"{marker} a", "email": f"{marker}-a@example.com", attribute: "x"})
        b = await create({"name": f"{marker} b", "email": f"{marker}-b@example.com", "phone": "+14155550177"})
        fields = (await get(int(a["id"])))["fields"]
        kept = fields.get(attribute) == "x"
        findings.append(
            Finding(
                CUSTOM_ATTRIBUTES,
                "stored" if kept else "ignored",
                f"created with a new attribute {attribute}; read back {fields.get(attribute)!r}",
            )
        )

        # Paging base: page 0 and page 1 of one record each.
        p0, _ = await listing(limit=1, page=0)
        p1, _ = await listing(limit=1, page=1)
        ids0, ids1 = [c.get("id") for c in p0], [c.get("id") for c in p1]
        base = "one" if ids0 == ids1 else "zero"
        findings.append(Finding(PAGING_BASE, base, f"limit=1: page 0 listed {ids0}, page 1 listed {ids1}"))

        # Largest limit: refused above 100? above 500? (else clamped)
        verdict, why = "50_clamped", "limit=101 and limit=501 were both accepted (clamped)"
        try:
            await listing(limit=101, page=1 if base == "one" else 0)
        except RecordError as exc:
            verdict, why = "100_refused", f"limit=101 refused: {exc}"
        else:
            try:
                await listing(limit=501, page=1 if base == "one" else 0)
            except RecordError as exc:
                verdict, why = "500_refused", f"limit=101 accepted, limit=501 refused: {exc}"
        findings.append(Finding(MAX_LIMIT, verdict, why))

        # Search: nothing matches a random string; a fragment of the marker; the exact email.
        junk, _ = await listing(search=f"zz{secrets.token_hex(6)}", limit=5)
        if junk:
            findings.append(Finding(SEARCH, "none", f"a search for a random string listed {len(junk)} contacts"))
        else:
            fragment = marker[len(marker) // 3 :]
            part, _ = await listing(search=fragment, limit=100)
            if any(c.get("id") == a["id"] for c in part):
                findings.append(Finding(SEARCH, "substring", f"a search for {fragment!r} found the probe contact"))
            else:
                findings.append(
                    Finding(SEARCH, "exact", f"a search for {fragment!r} did not find {marker}-a@example.com")
                )

        # Merge b (email, phone) into a (email, no phone): where do b's details go?
        await http.json("POST", merge_path(a["id"]), json_body={"sourceIds": [int(b["id"])]}, idempotent=False)
        created.remove(int(b["id"]))
        fields = (await get(int(a["id"])))["fields"]
        others = [*(fields.get("otherEmails") or []), *(fields.get("otherPhones") or [])]
        if f"{marker}-b@example.com" in [str(o).lower() for o in others]:
            result = "other_fields"
        elif fields.get("phone"):
            result = "fill_empty"
        else:
            result = "dropped"
        findings.append(
            Finding(
                MERGE_RESULT,
                result,
                f"merged a contact with email and phone into one without phone; the survivor's fields: "
                f"email={fields.get('email')!r} phone={fields.get('phone')!r} "
                f"otherEmails={fields.get('otherEmails')!r} otherPhones={fields.get('otherPhones')!r}",
            )
        )
    finally:
        for contact_id in reversed(created):
            try:
                await http.json("DELETE", contact_path(contact_id))
            except ConnectorError:
                pass
    return findings
