"""The personal-data rules every part shares: event validation, stored failures, audit actors, logs.

Every pattern here runs in time linear in its input, whatever the input (CONTRACT section 9): each
one can start a match only where a run of its characters starts (a look-behind refuses every other
position at once), so no position is scanned twice over. tests/test_linear_validation.py holds them to it.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"

# Keys of a personal kind, compared lower-cased without separators.
_PII_KEYS = frozenset({
    "name", "firstname", "lastname", "fullname", "surname", "givenname", "familyname", "username",
    "displayname",
    # a person's name under the name of their role ("name" alone as a part would catch `queue_name`)
    "customername", "visitorname", "clientname", "personname", "patientname", "contactname", "guestname",
    "applicantname", "callername", "holdername", "membername", "customerfullname",
    "email", "emailaddress", "mail", "phone", "phonenumber", "mobile", "tel", "telephone", "msisdn",
    "address", "street", "streetaddress", "postcode", "postalcode", "zip", "zipcode",
    "birthdate", "dateofbirth", "dob", "birthday", "nationalid", "ssn", "socialsecuritynumber", "passport",
    "passportnumber", "taxid", "personalnumber", "idnumber", "iban",
    "note", "notes", "comment", "comments", "freetext", "text", "message", "description", "remarks",
})
_PII_KEY_PARTS = ("email", "phone", "birth", "address", "passport", "national", "ssn", "firstname",
                  "lastname")
_KEY_SEPARATORS = str.maketrans("", "", " \t\r\n_-.")

# Each pattern starts with a plain character class, so the regex engine skips ahead to where a match can
# start, and then looks one character back (`\d(?<!\w\d)`: a digit with no word character before it) so
# that a match starts only where a run starts.
_LOCAL = r"[A-Za-z0-9._%+\-]"
# an e-mail address
_EMAIL = re.compile(rf"{_LOCAL}(?<!{_LOCAL}{_LOCAL}){_LOCAL}*@[A-Za-z0-9.\-]+\.[A-Za-z]{{2,}}")
# an international number (+44 20 7946 0958), or a bare run of nine or more digits
_PHONE = r"\+(?<![\w\-]\+)\d[\d \-]{6,}\d|\d(?<!\w\d)\d{8,}(?!\w)"
# a national identity number: a birth date (yymmdd or yyyymmdd) and a serial (800101-1234, 19800101+1234)
_NATIONAL_ID = r"\d(?<!\d\d)\d(?:\d\d)?(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[-+]\d{4}(?!\d)"
_NUMBERS = re.compile(f"{_PHONE}|{_NATIONAL_ID}")

# In references and codes (`queue:T-0042`, `passport`), where random ids may hold long runs of digits, only
# digit runs a phone, payment card or national id number fills count: 11 to 19 digits (random hex of 10 is
# all digits 1% of the time; a phone number has at most 15, a card at most 19, while a random 32-hex id,
# as `uuid4().hex` gives one time in three million, is all digits and no one's number)
_CANONICAL_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# Three tests rather than one pattern of three alternatives, since every event id goes through them: the plain
# string tests settle most ids before a pattern runs. The digit run looks back first: inside a run of ASCII
# digits it fails at once, so a match still starts only where a run starts.
_LONG_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])\d{11,19}(?![0-9A-Za-z])")
_NATIONAL_ID_IN_CODE = re.compile(_NATIONAL_ID)
# a person's name as a code: two or more capitalised words (`John.Smith`, `crm:Jane-Doe`, `/crm/Ada_Lovelace`)
_TITLED_NAME = re.compile(r"(?:[a-z][a-z0-9_]*:|/[a-z][a-z0-9_]*/)?[A-Z][a-z]+(?:[._\- ][A-Z][a-z]+)+")
# an actor's `sub` shaped like a name in any case: `john.smith`, `First_Last`
_NAME_LIKE_SUB = re.compile(r"[A-Za-z][a-z]+[._ ][A-Za-z][a-z]+(?:[._ ][A-Za-z][a-z]+)*")


def is_pii_key(key: str) -> bool:
    folded = key.lower().translate(_KEY_SEPARATORS)
    return folded in _PII_KEYS or any(part in folded for part in _PII_KEY_PARTS)


def looks_personal(text: str) -> bool:
    """Free text holding an e-mail address, a phone number or a national identity number."""
    return ("@" in text and _EMAIL.search(text) is not None) or _NUMBERS.search(text) is not None


def looks_personal_identifier(value: str) -> bool:
    """A reference, id or code that holds an e-mail, a phone or national id number, or a person's name."""
    if "-" in value and len(value) >= 36:
        value = _CANONICAL_UUID.sub("", value)  # a UUID's last group is all digits one time in 280
    return ("@" in value or _LONG_DIGIT_RUN.search(value) is not None
            or (("-" in value or "+" in value) and _NATIONAL_ID_IN_CODE.search(value) is not None)
            or _TITLED_NAME.fullmatch(value) is not None)


def looks_like_a_name(sub: str) -> bool:
    return _NAME_LIKE_SUB.fullmatch(sub) is not None


def scrub(text: str) -> str:
    """`text` with e-mail addresses, phone numbers and national identity numbers replaced."""
    if "@" in text:
        text = _EMAIL.sub(REDACTED, text)
    return _NUMBERS.sub(REDACTED, text)


# what ends a token: an address or number is never cut across one of these
_TOKEN_END = re.compile(r"""[\s"',;:{}\[\]()<>]""")
# past the cut, enough to hold any address or number the patterns find whole (an address is at most 320)
_SCRUB_MARGIN = 512


def excerpt(text: str, limit: int) -> str:
    """At most `limit` characters of `text`'s start, scrubbed: scrubbed before the cut, so that an address or
    number crossing it is still found whole, and the token the cut splits dropped (a part of one is not
    found at all)."""
    if len(text) > limit + _SCRUB_MARGIN:  # redaction may shorten the rest: this cut, too, at a token end
        text = _to_last_token_end(text[:limit + _SCRUB_MARGIN]) + "…"
    scrubbed = scrub(text)
    if len(scrubbed) <= limit:
        return scrubbed
    return _to_last_token_end(scrubbed[:limit]) + "…"


def _to_last_token_end(text: str) -> str:
    return text[:max((m.end() for m in _TOKEN_END.finditer(text)), default=0)]


def scrub_identifier(value: str | None) -> str | None:
    """An id, reference or code kept as it is unless it looks personal, then replaced whole."""
    return REDACTED if value is not None and looks_personal_identifier(value) else value


# the shape of the codes and references an event's data holds (`Code`, `Ref` in switchboard/events.py)
_CODE_SHAPED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]*")


def redact(value: Any, *, codes: bool = False) -> Any:
    """A copy with values under personal keys replaced and personal-looking strings scrubbed.

    `codes`: a string shaped like a code or a reference is judged as an event's codes are
    (`looks_personal_identifier`, replaced whole), not as free text: a random ticket number with nine digits
    in a row is no phone number, and a system's record must read as the event that told Switchboard the
    same value."""
    if isinstance(value, dict):
        return {redact_key(k): REDACTED if is_pii_key(str(k)) else redact(v, codes=codes)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, codes=codes) for v in value]
    if isinstance(value, str):
        return scrub_identifier(value if codes and _CODE_SHAPED.fullmatch(value) else scrub(value))
    return value


def redact_key(key: Any) -> Any:
    """A key is data too: `{"ada@example.org": 1}` keeps its value, not its name."""
    return scrub(key) if isinstance(key, str) else key
