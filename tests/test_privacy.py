"""switchboard/privacy.py: which identifiers look personal. Every event id, subject, source and code goes
through `looks_personal_identifier`; these pin its verdicts on each kind it must catch and each it must let
pass."""

from __future__ import annotations

import pytest

from backend.ingest.validate import Rejected, validate
from switchboard.privacy import REDACTED, excerpt, looks_personal_identifier, redact

PERSONAL = [
    "ada@example.org", "crm:ada@example.org", "@",
    "07946095812", "queue:W-123456789012", "x-44207946095812", "123456789012-z",  # runs of 11 to 19 digits
    "4111111111111111", "card-6011000990139424123",  # a payment card: 16, 19 digits
    "800101-1234", "crm:19800101+1234", "id-800101-1234",  # birth date and serial
    "John.Smith", "crm:Jane-Doe", "/crm/Ada_Lovelace",  # a name as a code
]
NOT_PERSONAL = [
    "9f1c2e7a4b3d40e8a1c65f0d2b7e9a31", "9f1c2e7a-4b3d-40e8-a1c6-512345678901",  # fake ids
    "queue:T-0042", "passport", "appointments:A-17", "site-07",
    "1234567890",  # ten digits: random hex holds such runs
    "55928047919444759007499310218080", "x-12345678901234567890",  # 32 and 20 digits: a random id, no number
    "a12345678901", "12345678901b",  # fake codes: a digit run inside a code is no number
    "800101-123", "801301-1234", "800132-1234", "john", "JOHN.SMITH",
]


@pytest.mark.parametrize("value", PERSONAL)
def test_an_identifier_holding_a_person_is_caught(value):
    assert looks_personal_identifier(value)


@pytest.mark.parametrize("value", NOT_PERSONAL)
def test_an_identifier_of_codes_and_random_ids_passes(value):
    assert not looks_personal_identifier(value)


def test_a_record_s_codes_are_judged_as_an_event_s_and_its_free_text_as_free_text():
    record = {"ticket": "T-1296895340", "counter": "C-123456789", "service": "licence",
              "owner": "ada@example.org", "caller": "W-123456789012",
              "slot_start": "2026-12-05T10:00:00+00:00",
              "reason": "call +44 20 7946 0958", "email": "x", "links": ["queue:T-0042", "John.Smith"]}
    assert redact(record)["ticket"] == "T-[redacted]"  # as free text, nine digits in a row read as a phone
    assert redact(record, codes=True) == {
        "ticket": "T-1296895340", "counter": "C-123456789", "service": "licence",  # as codes: kept
        "owner": REDACTED, "caller": REDACTED, "slot_start": "2026-12-05T10:00:00+00:00",
        "reason": f"call {REDACTED}", "email": REDACTED, "links": ["queue:T-0042", REDACTED]}


@pytest.mark.parametrize("personal", ["jane.doe@example.org", "+44 20 7946 0958", "19800101-1234"])
@pytest.mark.parametrize("at", range(480, 512, 3))
def test_an_excerpt_cut_across_an_address_or_number_keeps_none_of_it(personal, at):
    text = "a" * at + " " + personal + " and more words after it " * 40
    cut = excerpt(text, 500)
    assert len(cut) <= 501 and cut.endswith("…")
    assert not any(part in cut for part in ("jane", "@exa", "+44", "0958", "1980", "7946"))
    assert excerpt("short " + personal, 500) == f"short {REDACTED}"


def test_a_malformed_message_s_stored_excerpt_keeps_no_part_of_the_address_it_was_refused_for():
    for start in range(490, 512):
        body = b'{"data": "' + b"a" * start + b' jane.doe@example.org", "x": ' + b"1" * 40
        refused = validate(body, max_bytes=65536, known_systems=frozenset({"queue"}))
        assert isinstance(refused, Rejected) and refused.kind == "pii_rejected"
        assert "jane" not in refused.payload["excerpt"] and "@" not in refused.payload["excerpt"], start


def test_an_excerpt_of_many_addresses_keeps_no_part_of_one_even_when_their_redaction_shortens_it():
    """Found in review: cut to the margin first and then made short by redaction, the text was kept whole,
    the address cut at the margin with it."""
    text = " ".join(f"customer{n}.lastname@example-mail.org" for n in range(60))
    cut = excerpt(text, 512)
    assert "@" not in cut and "example-mail" not in cut and cut.endswith("…")
