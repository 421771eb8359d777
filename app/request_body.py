"""The one rule for request bodies' values: each must be of the JSON type `/openapi.json`
gives it. Pydantic's default (lax) mode would take `false` for 0, `"5"` for 5 and `"no"` for
false; a body model takes ``model_config = REQUEST_BODY`` instead, which also refuses fields
the model does not have."""

from pydantic import ConfigDict

REQUEST_BODY = ConfigDict(extra="forbid", strict=True)
