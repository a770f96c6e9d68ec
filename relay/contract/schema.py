"""The shipped JSON Schema of contract v1 (event-v1.schema.json), and a validator for it."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_FILE = "event-v1.schema.json"


@functools.cache
def load_schema() -> dict[str, Any]:
    """The schema as a dict (read once from the package data)."""
    text = resources.files("relay.contract").joinpath(SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Draft202012Validator:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate_event(obj: dict[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` when `obj` (an `Event.to_dict()`) breaks the contract."""
    _validator().validate(obj)
