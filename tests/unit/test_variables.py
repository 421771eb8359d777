"""Filling text from outside: `${VAR}` in pipeline configs (pipelines/config.py) and
`{{name}}` in an agent's prompt and greeting (app/telephony/variables.py)."""

import pytest

from app.errors import APIError
from app.storage.models import Agent
from app.telephony.variables import check_variables, fill, personalized, placeholders
from pipelines.config import PipelineCatalog, expand_env

pytestmark = pytest.mark.storage_free

CONFIG = """description: ${SB_TEST_DESCRIPTION:-a test pipeline}
vad: {service: silero}
stt: {service: whisper, options: {model: "${SB_TEST_STT_MODEL}"}}
llm:
  service: anthropic  # takes `timeout_secs`
  api_key_env: SB_TEST_LLM_KEY
  options: {base_url: "${SB_TEST_LLM_URL:-http://127.0.0.1:9/v1}", timeout_secs: ${SB_TEST_TIMEOUT:-20}}
tts: {service: piper, voices: {joe: en_US-joe-medium}}
"""


@pytest.fixture
def environment(monkeypatch):
    """No SB_TEST_* variable set; what a test sets is undone after it."""
    for name in ("A", "B", "DESCRIPTION", "STT_MODEL", "LLM_URL", "TIMEOUT", "LLM_KEY"):
        monkeypatch.delenv(f"SB_TEST_{name}", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "text, expanded",
    [
        ("${SB_TEST_A}", "alpha"),
        ("x-${SB_TEST_A}-${SB_TEST_A}-y", "x-alpha-alpha-y"),
        ("${SB_TEST_A:-fallback}", "alpha"),
        ("${SB_TEST_B:-fallback}", "fallback"),  # unset: the default
        ("${SB_TEST_EMPTY:-fallback}", "fallback"),  # empty: the default, as in the shell
        ("${SB_TEST_EMPTY}", ""),
        ("${SB_TEST_B:-}", ""),
        ("${SB_TEST_B}", ""),  # unset, no default: empty, not the placeholder
        ("${SB_TEST_B:-http://host:80/v1}", "http://host:80/v1"),  # colons in a default
        ("${sb_test_a}", "${sb_test_a}"),  # lower case is not a variable reference
        ("$SB_TEST_A", "$SB_TEST_A"),  # braces are required
        ("${SB_TEST_A", "${SB_TEST_A"),
        ("no references", "no references"),
    ],
)
def test_environment_references_expand(environment, text, expanded):
    environment.setenv("SB_TEST_A", "alpha")
    environment.setenv("SB_TEST_EMPTY", "")
    assert expand_env(text) == expanded


def test_a_config_reads_the_environment_when_loaded(environment, tmp_path):
    (tmp_path / "mine.yaml").write_text(CONFIG)
    catalog = PipelineCatalog([tmp_path])
    environment.setenv("SB_TEST_STT_MODEL", "tiny.en")
    environment.setenv("SB_TEST_TIMEOUT", "7.5")
    config = catalog.get("mine")
    assert config.description == "a test pipeline"
    assert config.stt.options["model"] == "tiny.en"
    assert config.llm.options == {"base_url": "http://127.0.0.1:9/v1", "timeout_secs": 7.5}
    assert config.missing_env() == ["SB_TEST_LLM_KEY"]
    # Read again on every load: a changed environment shows.
    environment.setenv("SB_TEST_LLM_URL", "http://llm.internal/v1")
    environment.setenv("SB_TEST_LLM_KEY", "sk-test")
    environment.delenv("SB_TEST_TIMEOUT")
    again = catalog.get("mine")
    assert again.llm.options["base_url"] == "http://llm.internal/v1"
    assert again.llm.options["timeout_secs"] == 20  # the default again, read as a YAML number
    assert again.missing_env() == []


def test_a_config_in_a_listed_directory_replaces_a_builtin_of_the_same_name(environment, tmp_path):
    (tmp_path / "local.yaml").write_text(CONFIG)
    catalog = PipelineCatalog([tmp_path])
    assert "local" in catalog.names() and "cloud" in catalog.names()
    assert catalog.get("local").description == "a test pipeline"
    assert PipelineCatalog().get("local").description != "a test pipeline"


def test_placeholders_are_found_with_or_without_spaces():
    assert placeholders("Hi {{name}}, {{ clinic }}!", None, "{{name}} {{bad name}} {{1x}}") == {
        "name",
        "clinic",
    }
    assert placeholders(None, "") == set()


def test_fill_replaces_every_placeholder_with_its_value_as_text():
    assert fill("{{ n }} of {{n}} for {{who}}", {"n": 3, "who": "Ana", "unused": 1}) == (
        "3 of 3 for Ana"
    )
    assert fill(None, {}) is None
    assert fill("{{braces}}", {"braces": "{{n}}"}) == "{{n}}"  # values are not filled again


def agent(**fields) -> Agent:
    return Agent(
        id="agt_1",
        name="Front desk",
        voice_id="joe",
        system_prompt="You work at {{clinic}}.",
        greeting="Hello {{ caller }}, this is {{clinic}}.",
        **fields,
    )


def test_missing_variables_are_a_422_naming_them_all():
    with pytest.raises(APIError) as refused:
        check_variables(agent(), {"clinic": "Smile"})
    assert refused.value.status == 422
    assert refused.value.body.code == "missing_variables"
    assert refused.value.body.details == {"missing": ["caller"]}
    with pytest.raises(APIError) as refused:
        check_variables(agent(), {})
    assert refused.value.body.details == {"missing": ["caller", "clinic"]}
    assert "caller, clinic" in refused.value.body.message


def test_personalized_fills_a_copy_and_leaves_the_agent_alone():
    stored = agent()
    filled = personalized(stored, {"clinic": "Smile Dental", "caller": "Ana"})
    assert filled.system_prompt == "You work at Smile Dental."
    assert filled.greeting == "Hello Ana, this is Smile Dental."
    assert (filled.id, filled.name, filled.voice_id) == ("agt_1", "Front desk", "joe")
    assert stored.system_prompt == "You work at {{clinic}}."
    assert stored.greeting == "Hello {{ caller }}, this is {{clinic}}."
