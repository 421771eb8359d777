"""The one rule for request bodies' values: each must be of the JSON type `/openapi.json`
gives it. Pydantic's default (lax) mode would take `false` for 0, `"5"` for 5 and `"no"` for
false; a body model takes ``model_config = REQUEST_BODY`` instead, which also refuses fields
the model does not have, and ends each integer's annotations with `WHOLE_NUMBER`."""

from collections.abc import Callable
from typing import Any

from pydantic import BeforeValidator, ConfigDict, Field
from pydantic.json_schema import JsonDict

REQUEST_BODY = ConfigDict(extra="forbid", strict=True)


def _whole_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


WHOLE_NUMBER = BeforeValidator(_whole_number)
"""An integer's last annotation, after its range (before it, pydantic leaves the range out of
the schema): as in JSON Schema, 5.0 is the integer 5; 5.5, "5" and true are still refused."""


def left_out_unchanged(
    json_schema_extra: JsonDict | Callable[[JsonDict], None] | None = None, **field: Any
) -> Any:
    """A PATCH body's `Field` for a value that is never null: left out, it stays as it is; null
    is refused like any other wrong type (its schema shows neither null nor a default)."""

    def schema(properties: JsonDict) -> None:
        if callable(json_schema_extra):
            json_schema_extra(properties)
        else:
            properties.update(json_schema_extra or {})
        properties.pop("default", None)

    return Field(default=None, json_schema_extra=schema, **field)
