"""An eval run's results as a table, JUnit XML (for CI) and JSON; with repeats, pass rates
and flaky scenarios (passed some runs, failed others)."""

import json
from collections import defaultdict
from dataclasses import dataclass
from xml.etree import ElementTree

from app.evals.runner import ScenarioResult


@dataclass
class Summary:
    """One scenario over its runs."""

    name: str
    runs: list[ScenarioResult]

    @property
    def passes(self) -> int:
        return sum(1 for r in self.runs if r.passed)

    @property
    def passed(self) -> bool:
        return self.passes == len(self.runs)

    @property
    def flaky(self) -> bool:
        return 0 < self.passes < len(self.runs)

    @property
    def reason(self) -> str:
        return next((r.reason for r in self.runs if not r.passed), "")


def summarize(results: list[ScenarioResult]) -> list[Summary]:
    by_name: dict[str, list[ScenarioResult]] = defaultdict(list)
    for result in results:
        by_name[result.name].append(result)
    return [Summary(name, runs) for name, runs in by_name.items()]


def _cell(value, width: int) -> str:
    text = "" if value is None else str(value)
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def table(results: list[ScenarioResult]) -> str:
    """The summary table: scenario, result (pass rate with repeats), reason, turns, p50
    voice-to-voice, cost."""
    rows = [("scenario", "result", "reason", "turns", "p50 v2v", "cost")]
    for summary in summarize(results):
        runs = summary.runs
        if len(runs) == 1:
            verdict = "PASS" if summary.passed else "FAIL"
        else:
            verdict = f"{summary.passes}/{len(runs)}" + (" FLAKY" if summary.flaky else "")
        p50s = [r.p50_ms for r in runs if r.p50_ms is not None]
        costs = [r.cost_usd for r in runs if r.cost_usd is not None]
        rows.append(
            (
                summary.name,
                verdict,
                summary.reason,
                str(max(len(r.turns) for r in runs)),
                f"{sorted(p50s)[len(p50s) // 2]} ms" if p50s else "-",
                f"${max(costs):.4f}" if costs else "-",
            )
        )
    widths = [min(max(len(row[i]) for row in rows), 60) for i in range(6)]
    lines = [
        "  ".join(_cell(v, w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    summaries = summarize(results)
    failed = sum(1 for s in summaries if not s.passed)
    flaky = sum(1 for s in summaries if s.flaky)
    lines.append(
        f"\n{len(summaries) - failed} passed, {failed} failed"
        + (f" ({flaky} flaky)" if flaky else "")
    )
    return "\n".join(lines)


def junit(results: list[ScenarioResult], suite: str = "switchboard-eval") -> str:
    """JUnit XML: a `testcase` per scenario run, a `failure` with every reason, the call's
    transcript in `system-out`."""
    failures = sum(1 for r in results if not r.passed)
    root = ElementTree.Element(
        "testsuites",
        name=suite,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        time=f"{sum(r.duration_s for r in results):.2f}",
    )
    testsuite = ElementTree.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{sum(r.duration_s for r in results):.2f}",
    )
    for run, result in enumerate(results):
        repeat = sum(1 for r in results[:run] if r.name == result.name)
        case = ElementTree.SubElement(
            testsuite,
            "testcase",
            classname=suite,
            name=result.name + (f" (run {repeat + 1})" if repeat else ""),
            time=f"{result.duration_s:.2f}",
        )
        if not result.passed:
            failure = ElementTree.SubElement(case, "failure", message=result.reason, type="eval")
            failure.text = "\n".join(result.failures)
        out = ElementTree.SubElement(case, "system-out")
        lines = [f"session {result.session_id}"] + [
            f"{entry['speaker']}: {entry['content']}" for entry in result.transcript
        ]
        out.text = "\n".join(lines)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        root, encoding="unicode"
    )


def to_json(results: list[ScenarioResult]) -> str:
    summaries = summarize(results)
    return json.dumps(
        {
            "passed": all(s.passed for s in summaries),
            "scenarios": [
                {
                    "name": s.name,
                    "passed": s.passed,
                    "pass_rate": s.passes / len(s.runs),
                    "flaky": s.flaky,
                    "runs": [r.to_json() for r in s.runs],
                }
                for s in summaries
            ],
        },
        indent=2,
    )
