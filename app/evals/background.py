"""Eval runs started through the API (`POST /v1/agents/{id}/evals`): the scenario files come in
the request as YAML text and run on the job queue (`eval.run`), on whichever node claims the
job, through this server's own front door with a key of the run's account made for the run
(and revoked after it). Each finished call's result is stored as it comes, so a run can be
watched; a run taken over after its node died starts again from the first scenario."""

import tempfile
from pathlib import Path

import yaml
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import APIError
from app.evals.judges import EvalLLM
from app.evals.runner import Target, run_scenario
from app.evals.scenarios import Scenario, ScenarioError, load_file
from app.state import AppState
from app.storage import accounts
from app.storage.ids import new_id, utcnow
from app.storage.models import Agent, ApiKey, EvalRun, Job
from app.urls import own_base_url

RUN_JOB = "eval.run"
MAX_DOCUMENTS = 20
MAX_DOCUMENT_CHARS = 64 * 1024
MAX_CALLS = 50
"""Calls one run makes at most (scenarios × repeat)."""


def parse_documents(documents: list[str]) -> list[Scenario]:
    """The scenarios of YAML scenario files sent to the API. Plain YAML only: tags (`!include`
    would read the server's files) are refused, like any file that does not load."""
    scenarios: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="switchboard-eval-") as directory:
        for index, text in enumerate(documents):
            try:
                yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ScenarioError(f"scenarios[{index}]: not plain YAML: {exc}") from None
            path = Path(directory) / f"scenarios[{index}]"
            path.write_text(text)
            scenarios.extend(load_file(path))
    return scenarios


def check(documents: list[str], names: list[str] | None = None) -> list[Scenario]:
    """The scenarios of files sent to the API (those `names`, if given), or a 422 naming the
    problem."""
    if any(len(document) > MAX_DOCUMENT_CHARS for document in documents):
        raise APIError(
            422,
            "invalid_scenarios",
            f"a scenario file is limited to {MAX_DOCUMENT_CHARS} characters",
        )
    try:
        return select(parse_documents(documents), names)
    except ScenarioError as exc:
        raise APIError(422, "invalid_scenarios", str(exc)) from None


def select(scenarios: list[Scenario], names: list[str] | None) -> list[Scenario]:
    """The scenarios called `names`, in that order (all of them for None)."""
    if names is None:
        return scenarios
    known = {scenario.name: scenario for scenario in scenarios}
    if unknown := [name for name in names if name not in known]:
        raise ScenarioError(
            f"no scenario called {', '.join(unknown)} (there are: {', '.join(known)})"
        )
    return [known[name] for name in dict.fromkeys(names)]


async def start(
    state: AppState,
    db: AsyncSession,
    agent: Agent,
    documents: list[str],
    names: list[str] | None,
    transport: str,
    text: bool,
    repeat: int,
) -> EvalRun:
    """Check a run's scenario files and options (a 422 naming the problem) and enqueue it."""
    if text and transport == "twilio":
        raise APIError(422, "validation_error", "text: works over the ws transport only")
    scenarios = check(documents, names)
    if len(scenarios) * repeat > MAX_CALLS:
        raise APIError(
            422, "invalid_scenarios", f"a run makes at most {MAX_CALLS} calls (scenarios × repeat)"
        )
    needing = [s.name for s in scenarios if s.needs_llm]
    if needing and eval_llm(state) is None:
        raise APIError(
            422,
            "eval_llm_not_configured",
            f"{', '.join(needing)}: a judge or simulated caller needs the server's eval LLM "
            "(SWITCHBOARD_EVAL_LLM_URL)",
        )
    run = EvalRun(
        id=new_id("evl"),
        account_id=agent.account_id,
        agent_id=agent.id,
        status="pending",
        transport=transport,
        text=text,
        repeat=repeat,
        documents=documents,
        names=names,
        total=len(scenarios) * repeat,
        results=[],
        created_at=utcnow(),
    )
    db.add(run)
    state.jobs.enqueue(db, RUN_JOB, {"eval_id": run.id, "agent_id": agent.id})
    await db.commit()
    return run


def eval_llm(state: AppState) -> EvalLLM | None:
    settings = state.settings
    if not settings.eval_llm_url:
        return None
    return EvalLLM(settings.eval_llm_url, settings.eval_llm_model, settings.eval_llm_api_key)


async def run(state: AppState, job: Job) -> None:
    """The `eval.run` job: every scenario, `repeat` times, one call at a time."""
    run_id = job.payload["eval_id"]
    async with state.db.sessions() as db:
        record = await db.get(EvalRun, run_id)
        if record is None or record.status in ("completed", "failed"):
            return
        record.status, record.results, record.error = "running", [], None
        await db.commit()
        account_id, agent_id = record.account_id, record.agent_id
        documents, names, repeat = list(record.documents), record.names, record.repeat
        target_options = (record.transport, record.text)
        secret = accounts.generate_key()
        key = await accounts.add_key(db, account_id, f"eval run {run_id}", secret)
    try:
        scenarios = select(parse_documents(documents), names)
        transport, text = target_options
        target = Target(
            own_base_url(state.settings),
            secret,
            agent_id,
            transport="twilio" if transport == "twilio" else "ws",
            text=text,
            llm=eval_llm(state),
        )
        results: list[dict] = []
        for _ in range(repeat):
            for scenario in scenarios:
                result = await run_scenario(scenario, target)
                results.append(result.to_json())
                async with state.db.sessions() as db:
                    record = await db.get(EvalRun, run_id)
                    if record is not None:
                        record.results = list(results)
                        await db.commit()
        await _finish(state, run_id, "completed", None)
    except Exception as exc:
        logger.exception(f"eval run {run_id} failed")
        await _finish(state, run_id, "failed", f"{type(exc).__name__}: {exc}")
    finally:
        async with state.db.sessions() as db:
            stored = await db.get(ApiKey, key.id)
            if stored is not None:
                await accounts.revoke_key(db, stored)


async def _finish(state: AppState, run_id: str, status: str, error: str | None) -> None:
    async with state.db.sessions() as db:
        record = await db.get(EvalRun, run_id)
        if record is not None:
            record.status, record.error, record.finished_at = status, error, utcnow()
            await db.commit()
