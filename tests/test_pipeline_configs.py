"""Pipeline config files are checked when they load: an unknown key, service or processor, a
processor at a point it can't run at or with options it refuses is an error naming the key and
the file. `switchboard pipelines check` says so (or what the config builds) without a server;
a server refuses to start with a broken config it was told to preload, lists the error of
any other in `GET /v1/pipelines`, and refuses its calls before they start. The JSON Schema
of config files is committed, current, and served."""

import json
import subprocess
import sys

import httpx
import jsonschema
import pytest
import yaml

from app.client import SessionClient
from pipelines import registry
from pipelines.config import BUILTIN_DIR, PipelineConfigError, expand_env, load_config
from tests.helpers.calls import agent_ws
from tests.helpers.servers import ROOT, TEST_PIPELINES, make_agent, start_server

SCRIPTED = yaml.safe_load((TEST_PIPELINES / "scripted.yaml").read_text())
WITH_PROCESSORS = {
    **SCRIPTED,
    "processors": {
        "after_stt": [
            {"name": "stt_mute"},
            {"name": "pii_redactor", "options": {"entities": ["email"]}},
        ],
        "after_llm": [{"name": "thinking_filler", "options": {"after_ms": 800}}],
        "before_output": [{"name": "background_audio", "options": {"volume": 0.2}}],
    },
}
BROKEN = {
    **SCRIPTED,
    "llm": {**SCRIPTED["llm"], "optons": {}},
    "processors": {
        "after_input": [{"name": "thinking_filler"}],
        "after_llm": [
            {"name": "shuot"},
            {"name": "thinking_filler", "options": {"after_ms": "soon"}},
        ],
        "before_stt": [{"name": "noise_filter", "options": {"strength": 3}}],
    },
}
BROKEN_PROBLEMS = [
    "unknown key 'llm.optons'",
]
PROCESSOR_PROBLEMS = [
    "processors.after_input.0: 'thinking_filler' can't run at after_input (it runs at after_llm, before_tts)",
    "processors.after_llm.0.name: unknown processor 'shuot'",
    "processors.after_llm.1.options.after_ms: Input should be a valid integer, unable to parse string as an integer",
    "unknown key 'processors.before_stt.0.options.strength'",
]


def write(path, config: dict):
    path.write_text(yaml.safe_dump(config))
    return path


def switchboard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.storage_free
def test_unknown_keys_services_and_processors_are_errors_naming_key_and_file(tmp_path):
    path = write(tmp_path / "broken.yaml", BROKEN)
    with pytest.raises(PipelineConfigError) as raised:
        load_config(path)
    assert str(path) in str(raised.value)
    assert raised.value.problems == BROKEN_PROBLEMS  # the keys first: nothing else is checked yet

    fixed = write(
        tmp_path / "fixed.yaml", {**BROKEN, "llm": SCRIPTED["llm"], "stt": {"service": "whispr"}}
    )
    with pytest.raises(PipelineConfigError) as raised:
        load_config(fixed)
    [service, *processors] = raised.value.problems
    assert service.startswith("stt.service: unknown service 'whispr' (known: ")
    assert [p.split(" (known")[0] for p in processors] == PROCESSOR_PROBLEMS

    misplaced = {**WITH_PROCESSORS, "processors": {"befor_stt": [{"name": "noise_filter"}]}}
    with pytest.raises(PipelineConfigError) as raised:
        load_config(write(tmp_path / "misplaced.yaml", misplaced))
    assert raised.value.problems[0].startswith(
        "processors.befor_stt: Input should be 'after_input', 'before_stt',"
    )

    config = load_config(write(tmp_path / "fine.yaml", WITH_PROCESSORS))
    assert [p.name for p in config.processors["after_stt"]] == ["stt_mute", "pii_redactor"]


@pytest.mark.storage_free
def test_a_request_limit_needs_a_smaller_summary_threshold_beside_it(tmp_path):
    unsummarized = {k: v for k, v in SCRIPTED["llm"].items() if k != "summarize_after_tokens"}
    for llm in (
        {**unsummarized, "max_request_tokens": 1600},
        {**SCRIPTED["llm"], "summarize_after_tokens": 1600, "max_request_tokens": 1600},
    ):
        with pytest.raises(PipelineConfigError) as raised:
            load_config(write(tmp_path / "limit.yaml", {**SCRIPTED, "llm": llm}))
        assert "max_request_tokens needs a smaller summarize_after_tokens" in str(raised.value)
    fine = {**SCRIPTED["llm"], "summarize_after_tokens": 1000, "max_request_tokens": 1600}
    assert load_config(write(tmp_path / "fine.yaml", {**SCRIPTED, "llm": fine})).llm


@pytest.mark.storage_free
def test_a_stage_option_its_service_does_not_take_is_an_error_naming_stage_and_option(tmp_path):
    llm_options = {**SCRIPTED["llm"]["options"], "temprature": 0.2, "system_instruction": "Hi."}
    typos = {
        **SCRIPTED,
        "vad": {"service": "silero", "options": {"confidence": 0.7, "stop_sec": 0.2}},
        "llm": {**SCRIPTED["llm"], "options": llm_options},
    }
    path = write(tmp_path / "typos.yaml", typos)  # keys sorted
    with pytest.raises(PipelineConfigError) as raised:
        load_config(path)
    assert raised.value.problems == [
        "vad.options.stop_sec: unknown option of service 'silero' (did you mean 'stop_secs'?)",
        "llm.options.system_instruction: set from the agent's system_prompt, not from the config",
        "llm.options.temprature: unknown option of service 'openai' (did you mean 'temperature'?)",
    ]
    checked = switchboard("pipelines", "check", str(path))
    assert checked.returncode == 1 and checked.stdout == ""
    assert "  - llm.options.temprature: unknown option of service 'openai'" in checked.stderr

    # A realtime stage's service and options are checked as well.
    realtime = {
        "service": "gemini_live",
        "options": {"model": "gemini-3.8-live", "voice": "Puck", "vad": {}, "base_ur": "x"},
        "voices": {"puck": "Puck"},
    }
    with pytest.raises(PipelineConfigError) as raised:
        load_config(write(tmp_path / "s2s.yaml", {"realtime": realtime}))
    assert raised.value.problems == [
        "realtime.options.base_ur: unknown option of service 'gemini_live' (did you mean 'base_url'?)",
        "realtime.options.voice: set from the agent's voice_id (mapped by the stage's voices), "
        "not from the config",
    ]
    with pytest.raises(PipelineConfigError) as raised:
        load_config(write(tmp_path / "s2s.yaml", {"realtime": {**realtime, "service": "gemini"}}))
    assert raised.value.problems[0].startswith("realtime.service: unknown service 'gemini' (known:")


@pytest.mark.storage_free
def test_pipelines_check_prints_what_a_config_builds_or_why_it_does_not_load(tmp_path):
    good = switchboard("pipelines", "check", str(write(tmp_path / "good.yaml", WITH_PROCESSORS)))
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()
    assert lines[0] == "pipeline 'good': Test pipeline — real local STT/TTS, scripted LLM."
    stages = [line.split(":")[0].strip() for line in lines[1:]]
    assert stages == [
        "input",
        "stt",
        "after_stt",
        "after_stt",
        "vad",
        "turn",
        "llm",
        "after_llm",
        "tts",
        "voices",
        "before_output",
        "output",
    ]
    assert "after_llm: thinking_filler {'after_ms': 800, 'text': 'One moment…'}" in good.stdout
    assert "'api_key': '***'" in good.stdout  # options that look secret are not printed

    bad_path = write(tmp_path / "bad.yaml", {**BROKEN, "llm": SCRIPTED["llm"]})
    bad = switchboard("pipelines", "check", str(bad_path))
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.splitlines()[0] == f"{bad_path}: does not load:"
    assert [
        line.removeprefix("  - ").split(" (known")[0] for line in bad.stderr.splitlines()[1:]
    ] == PROCESSOR_PROBLEMS

    missing = switchboard("pipelines", "check", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read it" in missing.stderr


@pytest.mark.storage_free
def test_the_committed_json_schema_is_current_and_checks_config_files():
    committed = json.loads((ROOT / "pipelines" / "pipeline-config.schema.json").read_text())
    assert committed == registry.json_schema(with_installed=False), (
        "regenerate: switchboard pipelines schema --no-installed > pipelines/pipeline-config.schema.json"
    )
    printed = switchboard("pipelines", "schema", "--no-installed")
    assert json.loads(printed.stdout) == committed
    validator = jsonschema.Draft202012Validator(committed)
    for path in [*BUILTIN_DIR.glob("*.yaml"), *TEST_PIPELINES.glob("*.yaml")]:
        # as the server reads them: `${VAR}` expanded (local.yaml's LLM port is one)
        assert not list(validator.iter_errors(yaml.safe_load(expand_env(path.read_text())))), path
    assert not list(validator.iter_errors(WITH_PROCESSORS))
    errors = {".".join(map(str, e.absolute_path)) for e in validator.iter_errors(BROKEN)}
    assert {
        "llm",
        "processors.after_input.0",
        "processors.after_llm.0",
        "processors.after_llm.1",
    } <= errors
    # Editors get each processor's options, with their documentation.
    filler = next(
        c
        for c in committed["properties"]["processors"]["properties"]["after_llm"]["items"]["oneOf"]
        if c["properties"]["name"]["const"] == "thinking_filler"
    )
    assert "slow" in filler["description"]
    assert (
        "before the filler"
        in filler["properties"]["options"]["properties"]["after_ms"]["description"]
    )


def test_a_broken_config_stops_a_server_told_to_preload_it(tmp_path):
    configs = tmp_path / "pipelines"
    configs.mkdir()
    write(configs / "broken.yaml", BROKEN)
    with pytest.raises(RuntimeError) as failed:
        start_server(
            tmp_path / "server",
            preload=["broken"],
            env={"SWITCHBOARD_PIPELINES_PATH": json.dumps([str(configs)])},
        )
    assert "not starting, a pipeline to preload does not load" in str(failed.value)
    assert "unknown key 'llm.optons'" in str(failed.value)


async def test_a_broken_config_is_listed_with_its_error_and_refuses_its_calls(tmp_path):
    configs = tmp_path / "pipelines"
    configs.mkdir()
    write(configs / "broken.yaml", BROKEN)
    editable = write(configs / "editable.yaml", SCRIPTED)
    server = start_server(
        tmp_path / "server", env={"SWITCHBOARD_PIPELINES_PATH": json.dumps([str(configs)])}
    )
    try:
        with server.client() as api:
            listed = {p["name"]: p for p in api.get("/v1/pipelines").json()}
            assert listed["editable"]["error"] is None and listed["editable"]["voices"] == ["joe"]
            assert str(configs / "broken.yaml") in listed["broken"]["error"]
            assert "unknown key 'llm.optons'" in listed["broken"]["error"]
            assert "broken" in server.log() and "its calls are refused" in server.log()

            refused = api.post(
                "/v1/agents",
                json={"name": "A", "voice_id": "joe", "system_prompt": "Hi.", "pipeline": "broken"},
            )
            assert refused.status_code == 422 and refused.json()["code"] == "invalid_pipeline"
            assert "unknown key 'llm.optons'" in refused.json()["message"]

            # A config that breaks after its agent was made: the next call is refused before it starts.
            agent = make_agent(api, pipeline="editable")
            write(editable, {**SCRIPTED, "processors": {"after_llm": [{"name": "shuot"}]}})
            async with SessionClient(agent_ws(server, agent["id"])) as client:
                error = await client.wait_for("session.error", timeout=10)
            assert error["code"] == "invalid_pipeline" and "shuot" in error["message"]

            schema = httpx.get(f"{server.url}/v1/pipelines/schema").json()  # no key needed
            assert schema == registry.json_schema()
            assert "/v1/pipelines/schema" in api.get("/openapi.json").json()["paths"]
            assert (
                "error"
                in api.get("/openapi.json").json()["components"]["schemas"]["PipelineOut"][
                    "properties"
                ]
            )
    finally:
        server.stop()
