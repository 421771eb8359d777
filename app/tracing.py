"""OpenTelemetry traces, exported over OTLP (HTTP/protobuf) when the standard variables ask for it.

With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, each process
exports its spans with an OTLP exporter that reads the other standard variables itself
(`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, ...), and calls
turn Pipecat's own tracing on. What is traced:

- each call: Pipecat's conversation → turn → STT / LLM / TTS spans (`conversation.id` is the
  session id; `session.id`, `agent.id` and `account.id` on the conversation);
- Switchboard's own: REST requests and WebSocket connections (FastAPI), session admission
  (`session.start`, `session.join`), tool calls (`tool.call`) with their HTTP requests, and
  background jobs (`job webhook.deliver`, `job analysis.run`) with theirs (httpx); each span about
  a call has its `session.id` (see `app.logs.bind_call`).

Unset, nothing is set up and every span below is a no-op.
"""

import os

from fastapi import FastAPI
from opentelemetry import trace

tracer = trace.get_tracer("switchboard")

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def exporting() -> bool:
    """Whether this process exports traces (calls then turn Pipecat's tracing on)."""
    return any(os.environ.get(name) for name in _ENDPOINT_VARIABLES)


def start_tracing(app: FastAPI, node_id: str) -> None:
    """Export this process's spans (`service.instance.id`: the node id), and trace the API's
    requests and every outgoing httpx request."""
    if not exporting():
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Pipecat's `setup_tracing` names the instance after $HOSTNAME, shared by a host's workers.
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", "switchboard"),
            "service.instance.id": node_id,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # A span per request and WebSocket connection; not one per WebSocket message (audio frames).
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="/health,/metrics", exclude_spans=["receive", "send"]
    )
    HTTPXClientInstrumentor().instrument()


def stop_tracing() -> None:
    """Send the spans still buffered (at shutdown)."""
    provider = trace.get_tracer_provider()
    if exporting() and hasattr(provider, "shutdown"):
        provider.shutdown()
