"""Post-call analysis (app/analysis.py): the custom fields an agent may ask for, the schema the
LLM is held to, and how its answer is checked."""

import json

import pytest
from pydantic import ValidationError

from app.analysis import (
    AnalysisFailed,
    AnalysisField,
    parse,
    result_model,
    strict_schema,
    transcript_text,
)
from app.storage.models import TranscriptEntry

pytestmark = pytest.mark.storage_free

FIELDS = [
    AnalysisField(name="wants_appointment", type="boolean", description="Wants an appointment"),
    AnalysisField(name="urgency", type="enum", description="How urgent", options=["low", "high"]),
    AnalysisField(name="party_size", type="number", description="People in the booking"),
    AnalysisField(name="callback", type="text", description="Number to call back"),
]
ANSWER = {
    "summary": "The caller booked a table.",
    "sentiment": "positive",
    "topics": ["booking"],
    "action_items": [],
    "custom": {"wants_appointment": True, "urgency": "high", "party_size": 4, "callback": "555"},
}


@pytest.mark.parametrize(
    "field, problem",
    [
        ({"name": "Urgency", "type": "text", "description": "x"}, "string_pattern_mismatch"),
        ({"name": "9lives", "type": "text", "description": "x"}, "string_pattern_mismatch"),
        ({"name": "a" * 65, "type": "text", "description": "x"}, "string_pattern_mismatch"),
        ({"name": "mood", "type": "date", "description": "x"}, "literal_error"),
        ({"name": "mood", "type": "text", "description": ""}, "string_too_short"),
        ({"name": "mood", "type": "enum", "description": "x"}, "value_error"),  # no options
        ({"name": "mood", "type": "enum", "description": "x", "options": []}, "too_short"),
        ({"name": "mood", "type": "text", "description": "x", "options": ["a"]}, "value_error"),
        ({"name": "mood", "type": "text", "description": "x", "colour": "red"}, "extra_forbidden"),
    ],
)
def test_a_custom_field_is_refused(field, problem):
    with pytest.raises(ValidationError) as refused:
        AnalysisField(**field)
    assert [e["type"] for e in refused.value.errors()] == [problem]


def test_the_strict_schema_requires_everything_and_allows_nothing_else():
    schema = strict_schema(result_model(FIELDS))
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    found = list(objects(schema))
    assert len(found) == 2  # the answer and its `custom` object (inlined)
    for node in found:
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])
    assert schema["required"] == ["summary", "sentiment", "topics", "action_items", "custom"]
    custom = schema["properties"]["custom"]["properties"]
    assert custom["urgency"]["enum"] == ["low", "high"]
    assert (custom["wants_appointment"]["type"], custom["party_size"]["type"]) == (
        "boolean",
        "number",
    )
    assert custom["callback"] == {"type": "string", "description": "Number to call back"}
    assert schema["properties"]["sentiment"]["enum"] == ["positive", "neutral", "negative"]


def test_no_custom_fields_still_asks_for_an_empty_custom_object():
    schema = strict_schema(result_model([]))
    assert schema["properties"]["custom"]["properties"] == {}
    assert schema["properties"]["custom"]["required"] == []


def test_a_valid_answer_is_returned_whether_bare_or_in_a_code_fence():
    model = result_model(FIELDS)
    expected = {**ANSWER, "custom": {**ANSWER["custom"], "party_size": 4.0}}
    assert parse(json.dumps(ANSWER), model) == expected
    fenced = f"Here you go:\n```json\n{json.dumps(ANSWER, indent=2)}\n```\nThanks."
    assert parse(fenced, model) == expected
    assert parse(f"```\n{json.dumps(ANSWER)}```", model) == expected


@pytest.mark.parametrize(
    "answer, reason",
    [
        (None, "the LLM gave an empty answer"),
        ("  \n ", "the LLM gave an empty answer"),
        ("The caller was happy.", "the answer is not JSON"),
        (json.dumps({**ANSWER, "sentiment": "ecstatic"}), "sentiment: Input should be"),
        (
            json.dumps({**ANSWER, "custom": {**ANSWER["custom"], "urgency": "medium"}}),
            "custom.urgency",
        ),
        (json.dumps({**ANSWER, "custom": {}}), "custom.wants_appointment: Field required"),
        (json.dumps({**ANSWER, "mood": "fine"}), "mood: Extra inputs are not permitted"),
        (
            json.dumps({k: v for k, v in ANSWER.items() if k != "summary"}),
            "summary: Field required",
        ),
        (json.dumps({**ANSWER, "summary": ""}), "summary: String should have at least 1"),
        (json.dumps([ANSWER]), "answer: Input should be a valid dictionary"),
    ],
)
def test_an_invalid_answer_fails_and_says_why(answer, reason):
    with pytest.raises(AnalysisFailed) as failed:
        parse(answer, result_model(FIELDS))
    assert reason in str(failed.value)


def test_the_transcript_leaves_out_tool_turns_and_marks_interruptions():
    entries = [
        TranscriptEntry(speaker="AGENT", content="Hello, clinic.", interrupted=False),
        TranscriptEntry(speaker="USER", content="Hi, I need", interrupted=False),
        TranscriptEntry(speaker="TOOL", content='{"slots": 3}', interrupted=False),
        TranscriptEntry(speaker="AGENT", content="We have three slots", interrupted=True),
    ]
    assert transcript_text(entries) == (
        "Agent: Hello, clinic.\nCaller: Hi, I need\nAgent: We have three slots [interrupted]"
    )


def test_the_transcript_shows_a_flows_nodes_and_collected_values():
    entries = [
        TranscriptEntry(speaker="SYSTEM", content='{"node": "greeting"}', interrupted=False),
        TranscriptEntry(speaker="AGENT", content="Hello, clinic.", interrupted=False),
        TranscriptEntry(speaker="USER", content="Book me in.", interrupted=False),
        TranscriptEntry(speaker="SYSTEM", content='{"node": "identify"}', interrupted=False),
    ]
    state = {"path": ["greeting", "identify"], "values": {"name": "Alice"}}
    assert transcript_text(entries, state) == (
        "[flow node: greeting]\nAgent: Hello, clinic.\nCaller: Book me in.\n"
        '[flow node: identify]\n[collected values: {"name": "Alice"}]'
    )
