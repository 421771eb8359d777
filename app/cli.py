"""`switchboard serve` runs the server; `switchboard talk` is the reference session client;
`switchboard eval` runs a suite of scenarios against an agent; `switchboard pipelines` checks
config files."""

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from app.settings import get_settings


async def prepare(settings) -> None:
    """Once per machine, before the web workers start: migrate, create the admin key (printed
    once) and store the recordings a crashed server left on this node's disk. Calls it left
    `active` are ended by the nodes' leases (`app/nodes.py`)."""
    from app.main import prepare_storage
    from app.recordings import finalise_left_behind
    from app.storage.db import Database

    db = Database(settings.resolved_database_url())
    try:
        await prepare_storage(db, settings)
        await finalise_left_behind(settings, db)
    finally:
        await db.dispose()


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.logs import UVICORN_LOG_CONFIG, configure_logging
    from pipelines import local_llm
    from pipelines.config import PipelineCatalog, PipelineConfigError

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    catalog = PipelineCatalog(settings.pipelines_path)
    try:
        preloaded = [catalog.get(name) for name in settings.preload_pipelines]
    except PipelineConfigError as exc:
        sys.exit(f"switchboard: not starting, a pipeline to preload does not load: {exc}")
    asyncio.run(prepare(settings))
    llm_servers = []
    metrics_dir = None
    if (
        args.workers > 1
    ):  # each worker writes its metrics here; /metrics sums them (app/api/metrics.py)
        metrics_dir = tempfile.mkdtemp(prefix="switchboard-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # uvicorn re-raises SIGTERM once it has shut down; exit through `finally` instead of dying on it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for config in preloaded:
            if config.llm and config.llm.local_server:
                alias = config.llm.options.get("model", "local")
                llm_servers.append(local_llm.KeptServer(config.llm.local_server, alias))
        options = dict(
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            ws_max_size=1 << 20,
            # Compressing base64 audio saves little and costs CPU on every frame each way.
            ws_per_message_deflate=False,
            h11_max_incomplete_event_size=1 << 16,
            log_level=settings.log_level.lower(),
            log_config=UVICORN_LOG_CONFIG,
        )
        if args.workers > 1 and hasattr(socket, "send_fds"):
            from app.workers import run_workers

            run_workers(uvicorn.Config("app.main:create_app", **options))
        else:
            uvicorn.run("app.main:create_app", **options)
    finally:
        for server in llm_servers:
            server.stop()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


async def talk(args: argparse.Namespace) -> int:
    from app.client import SessionClient, read_wav, write_wav

    api_key = args.api_key or os.environ.get("SWITCHBOARD_API_KEY")
    if not api_key:
        print("talk needs an API key: --api-key or SWITCHBOARD_API_KEY", file=sys.stderr)
        return 2
    base = args.url.rstrip("/").replace("http", "ws", 1)
    url = f"{base}/v1/agents/{args.agent_id}/session?{urlencode({'sample_rate': args.sample_rate})}"
    caller = read_wav(Path(args.wav), args.sample_rate)

    def show(event: dict) -> None:
        fields = {k: v for k, v in event.items() if k not in ("type", "_at")}
        print(f"<- {event['type']} {fields if fields else ''}", flush=True)

    client = SessionClient(url, args.sample_rate, headers={"X-API-Key": api_key})
    client.on_event = show
    try:
        await converse(client, caller, args)
    except (ConnectionError, OSError) as exc:
        print(f"session ended early: {exc}", file=sys.stderr)
        return 1
    write_wav(Path(args.out), bytes(client.agent_audio), args.sample_rate)
    print(f"agent audio: {len(client.agent_audio) / 2 / args.sample_rate:.1f}s saved to {args.out}")
    return 0


async def converse(client, caller: bytes, args: argparse.Namespace) -> None:
    """Greeting, then the caller's WAV, then the agent's reply, then hang up."""
    async with client:
        await client.wait_for("session.ready", timeout=30)
        if args.wait_greeting:
            try:
                await client.wait_for("agent.speech.stopped", timeout=30)
            except TimeoutError:
                pass
        await client.stream(caller)
        replies = len(client.of_type("transcript.agent"))
        await client.stream_silence(0.5)
        try:
            await client.wait_for("transcript.agent", timeout=args.reply_timeout, count=replies + 1)
            await client.wait_for(
                "agent.speech.stopped",
                timeout=args.reply_timeout,
                count=len(client.of_type("agent.speech.started")),
            )
        except TimeoutError:
            print("no reply from the agent in time", file=sys.stderr)
        if not client.closed:
            await client.send_event({"type": "session.end"})
            try:
                await client.wait_for("session.ended", timeout=5)
            except (TimeoutError, ConnectionError):
                pass


def eval_command(args: argparse.Namespace) -> int:
    """Run the scenarios under `path` against an agent: a line per call, the summary table,
    JUnit XML / JSON if asked; exit status 1 if any scenario failed, 2 on bad input."""
    from app.evals import report
    from app.evals.judges import EvalLLM
    from app.evals.runner import ScenarioResult, Target, run_suite
    from app.evals.scenarios import ScenarioError, load

    api_key = args.api_key or os.environ.get("SWITCHBOARD_API_KEY")
    if not api_key:
        print("eval needs an API key: --api-key or SWITCHBOARD_API_KEY", file=sys.stderr)
        return 2
    if args.text and args.transport == "twilio":
        print("--text works over the session WebSocket only", file=sys.stderr)
        return 2
    try:
        scenarios = load(Path(args.path))
    except ScenarioError as exc:
        print(f"scenarios do not load: {exc}", file=sys.stderr)
        return 2
    llm = None
    if args.llm_url:
        llm_key = os.environ.get("SWITCHBOARD_EVAL_LLM_API_KEY", "none")
        llm = EvalLLM(args.llm_url, args.llm_model, llm_key)
    target = Target(
        args.server, api_key, args.agent_id, args.transport, args.text, llm, args.reply_timeout
    )
    total = len(scenarios) * args.repeat
    done = 0

    def progress(result: ScenarioResult) -> None:
        nonlocal done
        done += 1
        verdict = "PASS" if result.passed else f"FAIL  {result.reason}"
        print(f"[{done}/{total}] {result.name}  {verdict}", flush=True)

    results = asyncio.run(run_suite(scenarios, target, args.repeat, progress))
    print()
    print(report.table(results))
    if args.junit:
        Path(args.junit).write_text(report.junit(results))
    if args.json:
        Path(args.json).write_text(report.to_json(results))
    return 0 if all(r.passed for r in results) else 1


def pipelines_command(args: argparse.Namespace) -> int:
    """`pipelines check FILE`: validate a config and say what it builds; `pipelines schema`:
    print the config files' JSON Schema (`pipelines/pipeline-config.schema.json`)."""
    from loguru import logger

    logger.remove()  # Pipecat's banner and info logs would bury the answer
    logger.add(sys.stderr, level="WARNING")
    from pipelines import registry
    from pipelines.config import PipelineConfigError, load_config

    if args.pipelines_command == "schema":
        print(json.dumps(registry.json_schema(with_installed=args.installed), indent=2))
        return 0
    path = Path(args.file)
    try:
        config = load_config(path)
    except PipelineConfigError as exc:
        print(f"{path}: does not load:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("\n".join(registry.describe(config)))
    if missing := config.missing_env():
        print(f"note: calls need {', '.join(missing)} set in the server's environment")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Switchboard voice-agent server"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the server")
    serve_cmd.add_argument("--host")
    serve_cmd.add_argument("--port", type=int)
    serve_cmd.add_argument("--workers", type=int, default=1)

    talk_cmd = commands.add_parser("talk", help="talk to an agent over the session WebSocket")
    talk_cmd.add_argument("agent_id")
    talk_cmd.add_argument("--wav", required=True, help="caller speech (16-bit PCM WAV)")
    talk_cmd.add_argument("--out", default="agent.wav", help="where to save the agent's audio")
    talk_cmd.add_argument("--url", default="http://127.0.0.1:8000")
    talk_cmd.add_argument("--api-key")
    talk_cmd.add_argument(
        "--sample-rate", type=int, default=16000, choices=[8000, 16000, 24000, 48000]
    )
    talk_cmd.add_argument("--reply-timeout", type=float, default=30)
    talk_cmd.add_argument("--wait-greeting", action=argparse.BooleanOptionalAction, default=True)

    eval_cmd = commands.add_parser("eval", help="run scenario files against an agent")
    eval_cmd.add_argument("agent_id")
    eval_cmd.add_argument("path", help="a scenario file or a directory of them")
    eval_cmd.add_argument("--server", default="http://127.0.0.1:8000")
    eval_cmd.add_argument("--api-key")
    eval_cmd.add_argument("--transport", choices=["ws", "twilio"], default="ws")
    eval_cmd.add_argument(
        "--text", action="store_true", help="send the caller's turns as input.text, not speech"
    )
    eval_cmd.add_argument("--repeat", type=int, default=1, help="run every scenario N times")
    eval_cmd.add_argument("--junit", help="write JUnit XML here")
    eval_cmd.add_argument("--json", help="write the results as JSON here")
    eval_cmd.add_argument(
        "--llm-url",
        help="an OpenAI-compatible server (…/v1) that judges and plays simulated callers, in "
        "place of the scenarios' judge/simulator blocks (key: SWITCHBOARD_EVAL_LLM_API_KEY)",
    )
    eval_cmd.add_argument("--llm-model", default="local")
    eval_cmd.add_argument("--reply-timeout", type=float, default=60)

    pipelines_cmd = commands.add_parser("pipelines", help="pipeline config files")
    pipelines_sub = pipelines_cmd.add_subparsers(dest="pipelines_command", required=True)
    check_cmd = pipelines_sub.add_parser(
        "check", help="validate a config file and print what it builds, without a server"
    )
    check_cmd.add_argument("file")
    schema_cmd = pipelines_sub.add_parser("schema", help="print the JSON Schema of config files")
    schema_cmd.add_argument(
        "--installed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include processors from installed packages (--no-installed: the built-in ones, "
        "as committed in pipelines/pipeline-config.schema.json)",
    )

    args = parser.parse_args(argv)
    if args.command == "serve":
        from app.shutdown import serve_then_exit

        serve_then_exit(lambda: serve(args))
    elif args.command == "pipelines":
        sys.exit(pipelines_command(args))
    elif args.command == "eval":
        if args.repeat < 1:
            parser.error("--repeat must be at least 1")
        sys.exit(eval_command(args))
    else:
        sys.exit(asyncio.run(talk(args)))


if __name__ == "__main__":
    main()
