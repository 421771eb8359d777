"""One call's conversation flow: Pipecat's `FlowManager` moving through the nodes of the
agent's flow config, each node's functions run by the call's `ToolRunner`.

The flow's state is the path of nodes taken and the values collected (the arguments of
every tool call that succeeded); each node change is marked in the transcript (speaker
SYSTEM, ``{"node": ...}``) and the state saved with the session, so a resumed call carries
on at the same node with the same values.
"""

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from pipecat.flows import (
    NO_RESPONSE,
    ActionConfig,
    ContextStrategy,
    ContextStrategyConfig,
    FlowConfig,
    FlowManager,
    FlowsFunctionSchema,
    NodeConfig,
)
from pipecat.flows.config import case_key
from pipecat.pipeline.worker import PipelineWorker

from app.calls.tools import ToolRunner

NODE_ACTION = "switchboard_node"
"""The pre-action every node starts with: it records the node change."""

SaveState = Callable[[dict[str, Any], str | None], Awaitable[None]]
"""Stores the flow state; with a node name when the call just entered that node."""


class CallFlow:
    """The agent's flow on one call: its nodes as Pipecat node configs, and its state."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        tools: list[dict],
        runner: ToolRunner,
        save: SaveState,
        state: dict[str, Any] | None = None,
    ):
        """``state``: a resumed call's stored state; it goes on with the flow it began with."""
        state = state or {}
        self.config: dict[str, Any] = state.get("flow") or config or {}
        self._config = FlowConfig.model_validate(self.config)
        self._tools = {t["name"]: t for t in tools}
        self._runner = runner
        self._save = save
        self.path: list[str] = list(state.get("path", []))
        self.values: dict[str, Any] = dict(state.get("values", {}))
        self._nodes: dict[str, NodeConfig] = {
            name: self._node(name, node) for name, node in self._config.nodes.items()
        }
        self._manager: FlowManager | None = None

    @property
    def state(self) -> dict[str, Any]:
        """As stored with the session: the path, the values and the flow the call runs."""
        return {"path": list(self.path), "values": dict(self.values), "flow": self.config}

    async def start(
        self, worker: PipelineWorker, llm: Any, context_aggregator: Any, speak_first: bool = True
    ) -> None:
        """Enter the first node (its turn waits for the caller unless `speak_first`); a
        resumed call returns to its node without a new turn."""
        manager = self._manager = FlowManager(
            worker=worker,
            llm=llm,
            context_aggregator=context_aggregator,
            context_strategy=ContextStrategyConfig(strategy=ContextStrategy.APPEND),
            global_functions=[self._function(f) for f in self._config.global_functions],
        )
        manager.state.update(self.values)
        manager.register_action(NODE_ACTION, self._entered)
        await manager.initialize()
        if self.path:
            node: NodeConfig = {
                **self._nodes[self.path[-1]],
                "pre_actions": [],
                "post_actions": [],
                "respond_immediately": False,
            }
            roles = [self._nodes[n].get("role_message") for n in self.path]
            if role := next((r for r in reversed(roles) if r), None):
                node["role_message"] = role  # the role the call had, as a role persists
            await manager.set_node_from_config(node)
        else:
            first = self._nodes[self._config.initial_node]
            await manager.set_node_from_config(
                {**first, "respond_immediately": speak_first and first["respond_immediately"]}
            )

    async def _entered(self, action: dict, _manager: FlowManager) -> None:
        self.path.append(action["node"])
        await self._save(self.state, action["node"])

    def _node(self, name: str, node: FlowConfig.Node) -> NodeConfig:
        config: NodeConfig = {
            "name": name,
            "task_messages": [{"role": m.role, "content": m.content} for m in node.task_messages],
            "functions": [self._function(f) for f in node.functions],
            "pre_actions": _actions([{"type": NODE_ACTION, "node": name}], node.pre_actions),
            "post_actions": _actions([], node.post_actions),
            "respond_immediately": node.respond_immediately,
        }
        if node.role_message is not None:
            config["role_message"] = node.role_message
        if strategy := node.context_strategy_enum():
            config["context_strategy"] = ContextStrategyConfig(strategy=strategy)
        return config

    def _function(self, function: FlowConfig.Function) -> FlowsFunctionSchema:
        if function.transition_only:
            target = str(function.transition_to)

            async def transition(_args: Mapping, _manager: FlowManager):
                return None, self._nodes[target]

            return FlowsFunctionSchema(
                name=function.name,
                description=function.description or "",
                properties={},
                required=[],
                handler=transition,
            )
        # A tool removed since the call began answers the LLM with an error.
        tool = self._tools.get(function.name, {"description": f"{function.name} (unavailable)"})
        parameters = tool.get("parameters") or {}

        async def run_tool(args: Mapping, _manager: FlowManager):
            # Arguments the LLM left out come from the values collected so far.
            properties = parameters.get("properties", {})
            arguments = {k: v for k, v in self.values.items() if k in properties} | dict(args)
            result, then = await self._runner.execute(
                function.name, arguments, f"flow_{uuid.uuid4().hex[:12]}"
            )
            if isinstance(result, Mapping) and "error" in result:
                return result, None  # a failed call stays at the node
            self.values.update(arguments)
            if self._manager:
                self._manager.state.update(arguments)
            await self._save(self.state, None)
            if then is not None:  # the call ends or moves on: no further turn
                await then()
                return result, NO_RESPONSE
            return result, self._destination(function, result)

        return FlowsFunctionSchema(
            name=function.name,
            description=tool["description"],
            properties=parameters.get("properties", {}),
            required=parameters.get("required", []),
            handler=run_tool,
        )

    def _destination(self, function: FlowConfig.Function, result: Any) -> NodeConfig | None:
        """The node the function's `transition_to` names, or picks by a field of the result;
        None stays (as does a result without the field)."""
        target = function.transition_to
        if target is None:
            return None
        if isinstance(target, str):
            return self._nodes[target]
        if not isinstance(result, Mapping) or target.field not in result:
            return None
        name = target.cases.get(case_key(result[target.field]), target.default)
        return self._nodes[name] if name else None


def _actions(first: list[dict], actions: list[FlowConfig.Action]) -> list[ActionConfig]:
    """Pipecat's action configs: `first`, then the node's own."""
    return cast(list[ActionConfig], first + [a.model_dump(exclude_none=True) for a in actions])
