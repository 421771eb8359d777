"""`{{name}}` placeholders in an agent's prompt and greeting, filled from an agent instance."""

import re

from sqlalchemy import inspect

from app.errors import APIError
from app.storage.models import Agent

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def placeholders(*texts: str | None) -> set[str]:
    return {name for text in texts if text for name in PLACEHOLDER.findall(text)}


def fill(text: str | None, variables: dict) -> str | None:
    if text is None:
        return None
    return PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), text)


def check_variables(agent: Agent, variables: dict) -> None:
    """422 unless every placeholder of the agent's prompt and greeting has a value."""
    missing = sorted(placeholders(agent.system_prompt, agent.greeting) - set(variables))
    if missing:
        raise APIError(
            422,
            "missing_variables",
            f"agent '{agent.id}' needs variables {', '.join(missing)}; pass an instanceId whose variables set them",
            {"missing": missing},
        )


def personalized(agent: Agent, variables: dict) -> Agent:
    """A detached copy of the agent with its placeholders filled (never saved)."""
    check_variables(agent, variables)
    columns = {attr.key: getattr(agent, attr.key) for attr in inspect(Agent).column_attrs}
    columns["system_prompt"] = fill(agent.system_prompt, variables)
    columns["greeting"] = fill(agent.greeting, variables)
    return Agent(**columns)
