"""Conversation flows: an agent's `flow` is a Pipecat flow config (`pipecat.flows.FlowConfig`,
its JSON Schema `flow_config.schema.json`) whose functions the server can run.

A node's function is either ``transition_only`` (Pipecat's: it moves to ``transition_to``),
or names one of the agent's tools (webhook, client, collect, end_call, transfer_call), which
the call's tool runner runs; its ``transition_to`` (a node, or a branch on a field of the
result) picks the next node. Actions are Pipecat's built-ins that need no code
(``tts_say``, ``end_conversation``).
"""

import json
from collections.abc import Sequence
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

import pipecat.flows
from jsonschema import Draft202012Validator
from pipecat.flows import FlowConfig
from pydantic import ValidationError

from app.errors import APIError
from pipelines import pipecat_compat

SERVER_ACTIONS = ("tts_say", "end_conversation")
"""The action types a stored flow may use: Pipecat's built-ins that take no handler."""


@cache
def flow_schema() -> dict[str, Any]:
    """Pipecat's JSON Schema of a flow config."""
    path = Path(pipecat.flows.__file__).with_name("flow_config.schema.json")
    return json.loads(path.read_text())


def _where(path: list) -> tuple[str | None, str]:
    """The node a schema error is in (None: the top level or global_functions) and its field."""
    parts = [str(p) for p in path]
    if len(parts) >= 2 and parts[0] == "nodes":
        return parts[1], ".".join(parts[2:]) or "(node)"
    return None, ".".join(parts) or "(flow)"


def _problem(node: str | None, field: str, message: str) -> dict[str, Any]:
    return {"node": node, "field": field, "message": message}


def _message(error: Any) -> str:
    return error["msg"].removeprefix("Value error, ")


def flow_problems(flow: Any, tools: list[dict]) -> list[dict[str, Any]]:
    """What is wrong with `flow` for an agent with `tools`: each problem names its node (None:
    the flow's top level), field and what is wrong. Empty when the flow can run."""
    errors = sorted(
        Draft202012Validator(flow_schema()).iter_errors(flow), key=lambda e: list(e.absolute_path)
    )
    if errors:
        return [_problem(*_where(list(e.absolute_path)), e.message) for e in errors]
    problems = []
    nodes: dict[str, FlowConfig.Node] = {}
    for name, node in flow["nodes"].items():
        try:
            nodes[name] = FlowConfig.Node.model_validate(node)
        except ValidationError as exc:  # beyond the schema: function names unique in a node
            problems += [_problem(name, "functions", _message(e)) for e in exc.errors()]
    if flow["initial_node"] not in flow["nodes"]:
        problems.append(
            _problem(None, "initial_node", f"'{flow['initial_node']}' is not a node of the flow")
        )
    names = sorted(t["name"] for t in tools)
    global_functions = [
        FlowConfig.Function.model_validate(f) for f in flow.get("global_functions", [])
    ]
    for where, functions in [
        *((name, node.functions) for name, node in nodes.items()),
        (None, global_functions),
    ]:
        prefix = "functions" if where else "global_functions"
        for index, function in enumerate(functions):
            problems += [
                _problem(
                    where,
                    f"{prefix}.{index}.transition_to",
                    f"'{target}' is not a node of the flow",
                )
                for target in function.targets()
                if target not in flow["nodes"]
            ]
            if not function.transition_only and function.name not in names:
                problems.append(
                    _problem(
                        where,
                        f"{prefix}.{index}.name",
                        f"function '{function.name}' has no handler: it is not transition_only "
                        f"and the agent has no tool of that name (tools: {', '.join(names) or 'none'})",
                    )
                )
    problems += _placeholder_problems(nodes, global_functions, {t["name"]: t for t in tools})
    for name, node in nodes.items():
        for kind in ("pre_actions", "post_actions"):
            for index, action in enumerate(getattr(node, kind)):
                if action.type not in SERVER_ACTIONS:
                    problems.append(
                        _problem(
                            name,
                            f"{kind}.{index}.type",
                            f"action type '{action.type}' has no handler on this server "
                            f"(allowed: {', '.join(SERVER_ACTIONS)})",
                        )
                    )
    if problems:
        return problems
    try:  # what is left: a function both global and a node's, duplicate names
        FlowConfig.model_validate(flow)
    except ValidationError as exc:
        return [
            _problem(None, "(flow)", e["msg"].removeprefix("Value error, ")) for e in exc.errors()
        ]
    return []


def _placeholder_problems(
    nodes: dict[str, FlowConfig.Node],
    global_functions: list[FlowConfig.Function],
    tools: dict[str, dict],
) -> list[dict[str, Any]]:
    """A `{{ key }}` in a node's prompts must name a value some function of the flow collects
    (an argument of one of its tools); else entering the node would fail."""
    functions = [*global_functions, *(f for node in nodes.values() for f in node.functions)]
    collected = {
        argument
        for f in functions
        if f.name in tools
        for argument in (tools[f.name].get("parameters") or {}).get("properties", {})
    }
    problems = []
    for name, node in nodes.items():
        texts = [("role_message", node.role_message or "")]
        texts += [
            (f"task_messages.{i}.content", m.content) for i, m in enumerate(node.task_messages)
        ]
        for kind in ("pre_actions", "post_actions"):
            texts += [
                (f"{kind}.{i}.text", str(a.extras().get("text", "")))
                for i, a in enumerate(getattr(node, kind))
            ]
        for field, text in texts:
            for escaped, key in pipecat_compat.flow_placeholders(text):
                if not escaped and key.split(".")[0] not in collected:
                    problems.append(
                        _problem(
                            name,
                            field,
                            f"{{{{ {key} }}}} is not a value any function of the flow collects",
                        )
                    )
    return problems


def check_flow(flow: dict | None, tools: list[dict]) -> None:
    """422 `invalid_flow` naming each problem's node and field, unless `flow` can run."""
    if flow is None:
        return
    problems = flow_problems(flow, tools)
    if problems:
        described = "; ".join(describe(p) for p in problems)
        raise APIError(422, "invalid_flow", f"flow: {described}", {"problems": problems})


def describe(problem: dict[str, Any]) -> str:
    """One problem as a line: `node 'x' field: message`."""
    where = f"node '{problem['node']}' " if problem["node"] else ""
    return f"{where}{problem['field']}: {problem['message']}"


BOX_WIDTH, BOX_HEIGHT, COLUMN, ROW = 150, 36, 180, 80


def _edges(flow: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Every transition between two of the flow's nodes, with the functions that make it."""
    config = FlowConfig.model_validate(flow)
    edges: dict[tuple[str, str], str] = {}
    for name, node in config.nodes.items():
        for function in node.functions:
            for target in dict.fromkeys(function.targets()):
                edges[name, target] = ", ".join(
                    filter(None, [edges.get((name, target)), function.name])
                )
    return edges


def flow_svg(flow: dict[str, Any], path: Sequence[str] = ()) -> str:
    """The flow drawn as SVG: its nodes in rows by their distance from the initial node, an
    arrow per transition (labelled with its function); the nodes and transitions of `path`
    (a call's) are marked `taken`."""
    edges = _edges(flow)
    depth = {flow["initial_node"]: 0}
    queue = [flow["initial_node"]]
    for source in queue:  # breadth first: the queue grows as nodes are reached
        for start, target in edges:
            if start == source and target not in depth:
                depth[target] = depth[source] + 1
                queue.append(target)
    for name in flow["nodes"]:  # unreachable nodes go last
        depth.setdefault(name, max(depth.values()) + 1)
    rows: dict[int, list[str]] = {}
    for name in flow["nodes"]:
        rows.setdefault(depth[name], []).append(name)
    width = max(len(r) for r in rows.values()) * COLUMN + 20
    centre = {
        name: (10 + (index + 0.5) * COLUMN + (width - 20 - len(row) * COLUMN) / 2, 20 + d * ROW)
        for d, row in rows.items()
        for index, name in enumerate(row)
    }
    taken_edges = set(zip(path, path[1:], strict=False))
    parts = []
    for (source, target), function in edges.items():
        (x1, y1), (x2, y2) = centre[source], centre[target]
        taken = " taken" if (source, target) in taken_edges else ""
        if y2 > y1:  # down to a later row
            line = f"M{x1:.0f},{y1 + BOX_HEIGHT:.0f} L{x2:.0f},{y2:.0f}"
        else:  # back up, or across: around the right side
            bend = max(x1, x2) + BOX_WIDTH / 2 + 15 + 10 * abs(y1 - y2) / ROW
            line = (
                f"M{x1 + BOX_WIDTH / 2:.0f},{y1 + BOX_HEIGHT / 2:.0f} C{bend:.0f},{y1:.0f} "
                f"{bend:.0f},{y2 + BOX_HEIGHT:.0f} {x2 + BOX_WIDTH / 2:.0f},{y2 + BOX_HEIGHT / 2:.0f}"
            )
        parts.append(
            f'<path class="edge{taken}" d="{line}" marker-end="url(#arrow)">'
            f"<title>{escape(function)}: {escape(source)} → {escape(target)}</title></path>"
        )
    for name, (x, y) in centre.items():
        classes = (
            "node"
            + (" taken" if name in path else "")
            + (" current" if path and name == path[-1] else "")
        )
        parts.append(
            f'<g class="{classes}" data-node="{escape(name)}">'
            f'<rect x="{x - BOX_WIDTH / 2:.0f}" y="{y:.0f}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="8"/>'
            f'<text x="{x:.0f}" y="{y + BOX_HEIGHT / 2 + 5:.0f}" text-anchor="middle">{escape(name)}</text></g>'
        )
    height = (max(rows) + 1) * ROW + 10
    return (
        f'<svg class="flow-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="Conversation flow">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
        + "".join(parts)
        + "</svg>"
    )
