"""Plot capacity runs: the media gap p99 and voice-to-voice p95 against the number of calls.

Reads the JSON results `benchmarks.capacity` writes (one line per run, labelled with its file's
name, e.g. before and after a change) and draws both against the step's calls, with the targets
(gap p99 ≤ 60 ms, voice-to-voice p95 ≤ 1.5 s) as dashed lines:

    .venv/bin/python -m benchmarks.plot_capacity docs/capacity.png benchmarks/results/<date>-<machine>.json ...
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write the file only
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

GAP_TARGET_MS = 60
V2V_TARGET_SECS = 1.5


def plot(results: dict[str, dict], out: Path) -> None:
    """`results`: each run's result by its label."""
    figure, (gap, v2v) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ticks: set[int] = set()
    for label, result in results.items():
        steps = result["steps"]
        calls = [step["calls"] for step in steps]
        ticks.update(calls)
        gap.plot(calls, [step["gap_p99"] * 1000 for step in steps], marker="o", label=label)
        v2v.plot(calls, [step["v2v_p95"] for step in steps], marker="o", label=label)
    gap.axhline(GAP_TARGET_MS, linestyle="--", color="grey", label=f"target {GAP_TARGET_MS} ms")
    gap.set(xlabel="simultaneous calls", ylabel="ms", title="agent media gap, p99")
    v2v.axhline(V2V_TARGET_SECS, linestyle="--", color="grey", label=f"target {V2V_TARGET_SECS} s")
    v2v.set(xlabel="simultaneous calls", ylabel="s", title="voice-to-voice, p95")
    for axes in (gap, v2v):
        axes.set_xscale("log")
        axes.minorticks_off()
        axes.set_xticks(sorted(ticks), [str(c) for c in sorted(ticks)])
        axes.legend(fontsize=8)
    first = next(iter(results.values()))
    figure.suptitle(
        f"{first['pipeline']}, --workers {first['workers']}, {first['machine'].split(',')[0]}, "
        f"{first['at'][:10]}",
        fontsize=9,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("results", type=Path, nargs="+", help="benchmarks.capacity JSON results")
    args = parser.parse_args()
    plot({path.stem: json.loads(path.read_text()) for path in args.results}, args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
