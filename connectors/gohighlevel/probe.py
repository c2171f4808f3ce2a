"""Measure a GoHighLevel location's inferred behaviours (``connectors/gohighlevel/behaviours.py``)
with one throwaway contact.

The contact is named ``contactsync probe <marker>`` with the email
``contactsync-probe-<marker>@example.com``; nothing else in the location is read beyond look-ups
of that email, and nothing else is written. The probe checks the address is free first, deletes
its contact (and a duplicate of it, if the location made one) at the end, and never deletes a
contact it did not create.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors.gohighlevel import behaviours as bh
from connectors.gohighlevel.api import CREATE, DATED_VERSIONS, DUPLICATE, SDK_VERSION, SEARCH, contact_path
from connectors.gohighlevel.client import GoHighLevelConnector
from connectors.probing import Finding
from connectors.timestamps import iso_ms

JSON = dict[str, Any]
_REFUSED = (400, 401, 403, 404, 409, 422)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def probe(connector: GoHighLevelConnector, *, marker: str) -> list[Finding]:
    """Every GoHighLevel behaviour's variant on this location, with evidence."""
    http = connector.http
    loc = connector.location_id
    email = f"contactsync-probe-{marker}@example.com".lower()
    findings: list[Finding] = []

    # -- Version: the same harmless look-up (the probe's own email) under each spelling.
    accepted = {}
    for version in (DATED_VERSIONS[0], SDK_VERSION):
        response = await http.request(
            "GET", DUPLICATE, params={"locationId": loc, "email": email}, headers={"Version": version}, allow=_REFUSED
        )
        accepted[version] = response.status_code == 200
        if accepted[version] and (_body(response) or {}).get("contact"):
            raise RuntimeError(f"gohighlevel probe: {email} is already taken; run the probe with another marker")
    if accepted[DATED_VERSIONS[0]] and accepted[SDK_VERSION]:
        variant = "both"
    elif accepted[SDK_VERSION]:
        variant = "v3"
    elif accepted[DATED_VERSIONS[0]]:
        variant = "2021-07-28"
    else:
        raise RuntimeError("gohighlevel probe: the location refused both Version 2021-07-28 and v3")
    findings.append(
        Finding(
            bh.VERSION,
            variant,
            f"GET {DUPLICATE} with Version 2021-07-28 -> {accepted[DATED_VERSIONS[0]]}, "
            f"with v3 -> {accepted[SDK_VERSION]} (True = accepted)",
        )
    )
    connector.version = SDK_VERSION if variant == "v3" else DATED_VERSIONS[0]

    body = {"locationId": loc, "firstName": "contactsync probe", "lastName": marker, "email": email}
    made: list[str] = []
    try:
        response = await http.request("POST", CREATE, json_body=body, idempotent=False, allow=_REFUSED)
        if response.status_code >= 300:
            raise RuntimeError(f"gohighlevel probe: create refused: HTTP {response.status_code} {response.text[:200]}")
        ours = str(response.json()["contact"]["id"])
        made.append(ours)

        # -- Duplicate create: the same email again.
        again = await http.request("POST", CREATE, json_body=body, idempotent=False, allow=_REFUSED)
        data = _body(again)
        meta = data.get("meta") if isinstance(data, dict) else None
        if again.status_code < 300:
            variant = "allowed"
            made.append(str(data["contact"]["id"]))
        elif isinstance(meta, dict) and meta.get("contactId"):
            variant = "400_meta"
        else:
            variant = "400_plain"
        findings.append(
            Finding(
                bh.DUPLICATE_CREATE,
                variant,
                f"a second POST {CREATE} with the probe's email -> HTTP "
                f"{again.status_code}"
                + (f", meta.contactId {meta.get('contactId')}" if isinstance(meta, dict) else ""),
            )
        )

        # -- Search count key: a search narrowed to the probe's email (visible or not yet).
        search = {"locationId": loc, "pageLimit": 1, "filters": [{"field": "email", "operator": "eq", "value": email}]}
        found = _body(await http.request("POST", SEARCH, json_body=search)) or {}
        keys = sorted(k for k in ("total", "count") if k in found)
        variant = "total" if "total" in found else "count"
        findings.append(Finding(bh.SEARCH_COUNT, variant, f"POST {SEARCH} answered with {keys or 'neither key'}"))

        # -- dateUpdated range value: one search per format, narrowed to the probe's email.
        since = datetime.now(UTC) - timedelta(days=1)
        answers = {}
        for fmt, value in (("iso", iso_ms(since)), ("epoch_ms", int(since.timestamp() * 1000))):
            filters = [
                {"field": "email", "operator": "eq", "value": email},
                {"field": "dateUpdated", "operator": "range", "value": {"gte": value}},
            ]
            r = await http.request("POST", SEARCH, json_body={**search, "filters": filters}, allow=_REFUSED)
            answers[fmt] = r.status_code
        variant = "epoch_ms" if answers["iso"] >= 300 and answers["epoch_ms"] < 300 else "iso"
        findings.append(
            Finding(
                bh.DATE_FILTER,
                variant,
                f"dateUpdated range as ISO -> HTTP {answers['iso']}, as epoch ms -> HTTP {answers['epoch_ms']}",
            )
        )
    finally:
        for contact_id in made:
            await http.request("DELETE", contact_path(contact_id), allow=_REFUSED)
    return findings
