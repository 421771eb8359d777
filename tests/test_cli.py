"""The CLI as a user meets it: first start prints a generated key once; `talk` holds a conversation."""

import re
import subprocess
import sys
import wave

from app.client import write_wav
from tests.audio import speech
from tests.helpers.servers import ROOT, make_agent, start_server

KEY_LINE = re.compile(r"Generated admin API key \(shown once, store it now\): (sk_\S+)")


def test_first_start_generates_and_prints_a_key_once(tmp_path):
    data = tmp_path / "fresh"
    server = start_server(data, api_key=None)
    try:
        keys = KEY_LINE.findall(server.log())
        assert len(keys) == 1
        server.api_key = keys[0]
        with server.client() as api:
            assert api.get("/v1/agents").status_code == 200
    finally:
        server.stop()
    again = start_server(data, api_key=None)
    try:
        assert (
            len(KEY_LINE.findall(again.log())) == 1
        )  # the log is appended to: still the first line only
        again.api_key = keys[0]
        with again.client() as api:
            assert api.get("/v1/agents").status_code == 200
    finally:
        again.stop()


def test_talk_streams_a_wav_and_saves_the_reply(server, api, llm, tmp_path):
    llm.script("We are open until six tonight.")
    agent = make_agent(api, pipeline="scripted", greeting="Hello!")
    caller = tmp_path / "caller.wav"
    write_wav(caller, speech("How late are you open tonight?", tail_secs=0.5), 16000)
    out = tmp_path / "agent.wav"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "talk",
            agent["id"],
            "--wav",
            str(caller),
            "--out",
            str(out),
            "--url",
            server.url,
            "--api-key",
            server.api_key,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "<- session.ready" in result.stdout
    assert "<- transcript.user" in result.stdout and "open" in result.stdout.lower()
    assert "We are open until six tonight." in result.stdout
    assert "<- session.ended {'reason': 'caller_hangup'}" in result.stdout
    with wave.open(str(out), "rb") as wav:
        assert wav.getframerate() == 16000
        assert wav.getnframes() > 16000  # greeting + reply: well over a second
