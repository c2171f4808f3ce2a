"""Measure a DM Champ account's inferred behaviours (``connectors/dmchamp/behaviours.py``) with
one throwaway contact.

The contact is named ``contactsync probe`` / ``<marker>`` and given a fictional number
(``+1 NPA 555-01xx``, the range set aside for fiction) that no contact of the account holds in
either spelling; only look-ups of that number and of the placeholder email are made. DM Champ
cannot delete a contact through its API, so that contact is left: every finding's evidence names
it, for a person to remove in the DM Champ UI.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from connectors.dmchamp import behaviours as bh
from connectors.dmchamp.api import ALREADY_EXISTS_MESSAGE, CONTACTS, PLACEHOLDER_EMAIL
from connectors.dmchamp.client import DmChampConnector
from connectors.probing import Finding

_ANSWERED = (400, 404, 409, 422)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def _find(connector: DmChampConnector, **params: str) -> str | None:
    response = await connector.http.request("GET", CONTACTS, params=params, allow=_ANSWERED)
    body = _body(response)
    if response.status_code == 200 and isinstance(body, dict) and body.get("contactId"):
        return str(body["contactId"])
    return None


async def _free_number(connector: DmChampConnector, marker: str) -> str:
    """A fictional number no contact holds, as written with or without its "+"."""
    start = int(hashlib.sha256(marker.encode()).hexdigest(), 16)
    for i in range(100):
        n = (start + i) % 100
        area = 200 + (start // 100 + i) % 700
        number = f"+1{area}55501{n:02d}"
        if (
            await _find(connector, phoneNumber=number) is None
            and await _find(connector, phoneNumber=number[1:]) is None
        ):
            return number
    raise RuntimeError("dmchamp probe: no free fictional phone number found")


async def probe(connector: DmChampConnector, *, marker: str) -> list[Finding]:
    """Every DM Champ behaviour's variant on this account, with evidence."""
    http = connector.http
    phone = await _free_number(connector, marker)
    body = {"phoneNumber": phone, "firstName": "contactsync probe", "lastName": marker}
    created = await http.request("POST", CONTACTS, json_body=body, idempotent=False)
    data = (_body(created) or {}).get("data") or {}
    ours = str(data.get("contactId") or "")
    if not ours:
        raise RuntimeError(f"dmchamp probe: create answered without a contactId: {created.text[:200]}")
    left = (
        f"; left on the account (DM Champ cannot delete through its API): contact {ours}, "
        f"'contactsync probe {marker}', {phone}"
    )
    findings: list[Finding] = []

    # -- Duplicate create: the same number again.
    again = await http.request("POST", CONTACTS, json_body=body, idempotent=False, allow=_ANSWERED)
    answer = _body(again)
    text = str(answer)[:200]
    if again.status_code == 409:
        variant = "409"
    elif again.status_code >= 400:
        variant = "400"
    else:
        variant = "200_existing"
        inner = (answer or {}).get("data") if isinstance(answer, dict) else None
        other = str((inner or {}).get("contactId") or "")
        if other and other != ours:
            # Not one of the readings: the account made a second contact. Said so plainly.
            text += f" (a second contact {other} was made: it cannot be deleted through the API)"
    exists = ALREADY_EXISTS_MESSAGE.lower() in str(answer).lower()
    findings.append(
        Finding(
            bh.DUPLICATE_CREATE,
            variant,
            f"a second POST {CONTACTS} with {phone} -> HTTP {again.status_code} "
            f"({'says' if exists else 'does not say'} '{ALREADY_EXISTS_MESSAGE}'): {text}{left}",
        )
    )

    # -- Phone lookup: the same number without its "+".
    bare = await _find(connector, phoneNumber=phone[1:])
    variant = "normalized" if bare == ours else "exact"
    findings.append(
        Finding(bh.PHONE_LOOKUP, variant, f"GET {CONTACTS}?phoneNumber={phone[1:]} -> {bare or 'not found'}{left}")
    )

    # -- Default email: the probe contact was created without one.
    holder = await _find(connector, email=PLACEHOLDER_EMAIL)
    variant = "placeholder" if holder is not None else "none"
    findings.append(
        Finding(
            bh.DEFAULT_EMAIL,
            variant,
            f"GET {CONTACTS}?email={PLACEHOLDER_EMAIL} -> {holder or 'not found'}"
            + (" (the probe contact)" if holder == ours else "")
            + left,
        )
    )
    return findings
