"""The one rule for request bodies' field names: snake_case on every route. Routes the seed
API served in camelCase (the Calls API, the Twilio session and outbound-call bodies) accept
those names too, as aliases (and carrier webhooks `?agentId=` as well as `?agent_id=`);
/openapi.json shows the snake_case names."""

from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from app.request_body import REQUEST_BODY


def _snake_or_camel(name: str) -> AliasChoices:
    return AliasChoices(name, to_camel(name))


class CamelCaseAccepted(BaseModel):
    """A request body that also takes each field's camelCase name (or the alias the field
    names itself, e.g. ``validation_alias=AliasChoices("to_number", "to")``)."""

    model_config = REQUEST_BODY | ConfigDict(
        alias_generator=AliasGenerator(validation_alias=_snake_or_camel)
    )

    @model_validator(mode="wrap")
    @classmethod
    def _missing_fields_name_their_aliases(cls, data, handler):
        """A missing field's error names every name it is accepted under, not just the first."""
        try:
            return handler(data)
        except ValidationError as exc:
            if not any(error["type"] == "missing" for error in exc.errors()):
                raise
            errors: list[Any] = []  # pydantic's InitErrorDetails
            for error in exc.errors(include_url=False):
                name = error["loc"][0] if len(error["loc"]) == 1 else None
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if error["type"] == "missing" and field is not None:
                    choices = getattr(field.validation_alias, "choices", ())
                    names = [n for n in dict.fromkeys(choices) if n != error["loc"][0]]
                    loc = (f"{error['loc'][0]} (or {', '.join(names)})",) if names else error["loc"]
                    errors.append({"type": "missing", "loc": loc, "input": error["input"]})
                else:  # kept as it was (its type may be a custom one pydantic can't rebuild)
                    kind = PydanticCustomError(
                        error["type"], "{message}", {"message": error["msg"]}
                    )
                    errors.append({"type": kind, "loc": error["loc"], "input": error["input"]})
            raise ValidationError.from_exception_data(exc.title, errors) from None


def _agent_id_query(
    agent_id: str | None = None,
    agentId: Annotated[str | None, Query(include_in_schema=False)] = None,  # noqa: N803
) -> str | None:
    return agent_id or agentId


AgentIdQuery = Annotated[str | None, Depends(_agent_id_query)]
"""`?agent_id=`, or the seed's `?agentId=` (carrier webhook URLs)."""
