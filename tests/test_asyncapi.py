"""docs/asyncapi.yaml is what the msgspec types generate; a change to either without the other fails here."""

from __future__ import annotations

import yaml

from switchboard.events import EVENT_TYPES
from tools.asyncapi import DOCUMENT, generate


def test_the_asyncapi_document_matches_the_code():
    assert yaml.safe_load(DOCUMENT.read_text()) == generate(), (
        "docs/asyncapi.yaml is out of date: run `python -m tools.asyncapi`")


def test_every_subject_of_the_contract_is_documented_with_a_resolvable_schema():
    document = generate()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {f"svc.events.{{system}}.{t}" for t in EVENT_TYPES} <= addresses
    assert {"svc.commands.{system}.{command}", "svc.snapshot.{system}"} <= addresses
    schemas = document["components"]["schemas"]
    for message in document["components"]["messages"].values():
        assert message["payload"]["$ref"].removeprefix("#/components/schemas/") in schemas
    booked = schemas["AppointmentBooked"]
    assert booked["properties"]["type"]["enum"] == ["appointment.booked"]
    assert set(booked["required"]) >= {"specversion", "id", "source", "subject", "time", "data"}
