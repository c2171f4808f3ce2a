"""Facts about DM Champ's contact API that the client and the emulator share.

Documented: the ``/contacts`` paths, the keys a create takes (``phoneNumber`` required, with
its country code) and the five keys an update may change, the lookup answering 404 when nothing
is found, and the two answers to a create for an existing phone number ("Contact already exists",
or the existing contact's id). DM Champ has no list and no read-by-id.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- paths
CONTACTS = "/contacts"  # GET ?phoneNumber=|email= -> {success, contactId}; POST create
CONTACT = "/contacts/{contact_id}"  # PUT update
CONTACT_LISTS = "/contacts/lists"  # POST|DELETE {contactId, listId}
CONTACT_TAGS = "/contacts/tags/{contact_id}"  # GET -> [{name, ...}]
CONTACT_MESSAGES = "/contacts/messages/{contact_id}"


def contact_path(contact_id: str) -> str:
    return CONTACT.format(contact_id=contact_id)


def tags_path(contact_id: str) -> str:
    return CONTACT_TAGS.format(contact_id=contact_id)


# --------------------------------------------------------------------------- payloads
UPDATABLE_KEYS = frozenset({"firstName", "lastName", "email", "is_bot_active", "do_not_disturb"})
CREATE_KEYS = frozenset(
    {
        "phoneNumber",
        "firstName",
        "lastName",
        "email",
        "instagramId",
        "currentCampaign",
        "currentCampaignData",
        "channel",
        "isChatWindowOpen",
        "externalId",
        "customChannel",
        "chatWidgetId",
        "is_bot_active",
        "do_not_disturb",
    }
)
#: Documented defaults of a create (the boolean ones: firstName/lastName "Unknown" are not data).
CREATE_DEFAULTS = {"do_not_disturb": False, "is_bot_active": True}
BOOL_KEYS = frozenset({"is_bot_active", "do_not_disturb", "isChatWindowOpen"})

#: The message of a create refused (409) or answered with the existing contact's id because
#: the phone number is taken; matched case-insensitively by "already exists".
ALREADY_EXISTS_MESSAGE = "Contact already exists"

#: The email a create without one may be given (dmchamp.default_email "placeholder", inferred:
#: the seed shows an email default whose address is obfuscated in our copy). Never looked up.
PLACEHOLDER_EMAIL = "user@example.com"
