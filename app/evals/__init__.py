"""Evals: run a suite of conversations against an agent through its real front door.

Scenario files are Pipecat's (`pipecat.evals.scenario`): scripted scenarios (`turns:`) and
simulated ones (`persona:`), plus a `switchboard:` block of what only the server knows (tool
calls, flow nodes, end reason, words said, voice-to-voice and cost budgets). `scenarios` loads
them, `transports` plays the caller (session WebSocket or Twilio Media Streams, speech or
text), `runner` drives a call and checks it, `judges` builds the judge and the simulated
caller, `report` writes the table, JUnit XML and JSON. The CLI (`switchboard eval`) uses them.
"""
