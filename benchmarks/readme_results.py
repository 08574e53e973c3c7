"""Measure the README's results with the project's own commands, and write them into README.md.

For each dataset (the real partial UrbanSound8K sample where it is found, and the built-in demo
corpus) this runs, exactly as a user would:

1. ``python -m urbansound.run -m n_mfcc=20,40,60 ...``: the tutorial's MFCC grid as an Optuna
   study, every trial a 10-fold CV on the predefined folds (100 epochs, batch 32);
2. ``python -m urbansound.report <sweep dir> --random-split``: the sweep report, which also
   evaluates the best configuration on the tutorial's leaky random 80/20 split;
3. with the ``birdnet`` extra installed, ``python -m urbansound.run -m features=mfcc,birdnet
   model=logreg,mlp ...`` and its report with ``--ensemble 3``: hand-made features against
   BirdNET embeddings, each with the untuned linear probe and the tutorial's MLP, on the same
   folds, the paired test between the kinds' bests and the top-3 ensemble across kinds.

It then copies the report's key plots into ``benchmarks/results/<dataset>/`` and replaces the part
of README.md between the ``results:start`` and ``results:end`` markers with a table built from the
reports' ``summary.json`` (no number is typed in by hand).

Usage::

    python benchmarks/readme_results.py [--real ../shared/data/UrbanSound8K] [--work DIR]
                                        [--only grid|kinds ...]

``--only`` measures those parts again and keeps the others' last ``summary.json`` (``--only``
alone rewrites the README from the saved summaries).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from urbansound.utils.files import atomic_write, write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"
PLOTS = ("confusion_matrix.png", "optimization_history.png", "protocol_comparison.png")


def _run(cmd: list[str], *, cwd: Path) -> None:
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


#: What each part sweeps, and the report options it adds.
PARTS = {
    "grid": (["n_mfcc=20,40,60"], ["--random-split"]),
    "kinds": (["features=mfcc,birdnet", "model=logreg,mlp"], ["--ensemble", "3"]),
}


def measure(name: str, data_args: list[str], *, work: Path, part: str = "grid") -> dict:
    """Run one part's sweep and its report for one dataset; return the report's summary."""
    sweep_dir = work / name / "sweep"
    report_dir = work / name / "report"
    shutil.rmtree(work / name, ignore_errors=True)
    overrides, report_options = PARTS[part]
    sweep = [
        sys.executable,
        "-m",
        "urbansound.run",
        "-m",
        *overrides,
        *data_args,
        "tracking.mode=disabled",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.storage=sqlite:///{work / 'optuna.db'}",
        f"hydra.sweeper.study_name=readme-{name}",
    ]
    report = [
        sys.executable,
        "-m",
        "urbansound.report",
        str(sweep_dir),
        *report_options,
        "--no-progress",
        "--out",
        str(report_dir),
    ]
    t0 = time.perf_counter()
    _run(sweep, cwd=work)
    _run(report, cwd=work)
    summary = json.loads((report_dir / "summary.json").read_text())
    summary["_commands"] = [_display(sweep, work), _display(report, work)]
    summary["_seconds"] = time.perf_counter() - t0
    dest = RESULTS / name
    dest.mkdir(parents=True, exist_ok=True)
    for png in PLOTS if part == "grid" else ():
        if (report_dir / png).is_file():
            shutil.copyfile(report_dir / png, dest / png)
    best_run = Path(summary["best"]["run_dir"])
    overview = best_run / "figures" / "classes_overview.png"
    if part == "grid" and overview.is_file():
        shutil.copyfile(overview, dest / "classes_overview.png")
    write_json(dest / "summary.json", _portable(summary))
    return summary


def _display(cmd: list[str], work: Path) -> str:
    """The command as a user types it from the repository root (paths made relative)."""
    text = shlex.join(["python", *cmd[1:]])
    return text.replace(str(work), "<work>").replace(str(REPO.parent), "..")


def _portable(summary: dict) -> dict:
    return json.loads(json.dumps(summary).replace(str(REPO.parent), ".."))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(results: dict[str, dict]) -> str:
    """The README section: one table per dataset plus the commands and plots."""
    lines = [
        START,
        "",
        "_Written by `python benchmarks/readme_results.py`; the numbers come from the reports' "
        "`summary.json` files in `benchmarks/results/`._",
        "",
    ]
    kinds = {name: s for name, s in results.items() if name.endswith("-kinds")}
    for name, s in results.items():
        if name.endswith("-kinds"):
            continue
        title = {
            "real": "Real UrbanSound8K sample (164 clips of `../shared/data`)",
            "demo": "Built-in demo corpus (synthetic, 1 000 clips)",
        }[name]
        best = s["best"]
        proto = (s.get("protocol_comparison") or [{}])[0]
        leaky = (proto.get("random_split") or {}).get("accuracy")
        lines += [
            f"#### {title}",
            "",
            "| n_mfcc | mean CV accuracy (predefined folds) | std over folds |",
            "| ---: | ---: | ---: |",
        ]
        for t in sorted(s["trials"], key=lambda t: t["params"].get("n_mfcc", 0)):
            if t["state"] != "COMPLETE":
                continue
            lines.append(f"| {t['params'].get('n_mfcc')} | {_pct(t['value'])} | {_pct(t['std'])} |")
        lines.append("")
        folds_note = f"{len(best['folds'])} folds"
        lines.append(
            f"Best: `{best['label']}`, {_pct(best['value'])} ± {_pct(best['std'])} "
            f"({folds_note}, pooled {_pct(best['pooled_accuracy'])})."
        )
        if leaky is not None:
            lines.append(
                f"The same configuration on the tutorial's random 80/20 split (**LEAKY**): "
                f"{_pct(leaky)}, {leaky / best['value']:.2f}x the honest fold-CV figure."
            )
        pairs = s.get("paired_comparisons") or []
        if pairs:
            c = pairs[0]["comparison"]
            lines.append(
                f"Best vs runner-up (`{pairs[0]['other']['label']}`): mean per-fold difference "
                f"{100 * c['mean_difference']:+.1f} points, corrected resampled t-test "
                f"p = {c['ttest']['pvalue']:.2f}, Wilcoxon p = {c['wilcoxon']['pvalue']:.2f}."
            )
        lines += ["", "Reproduce:", "", "```bash", *s["_commands"], "```", ""]
        imgs = [p for p in (*PLOTS, "classes_overview.png") if (RESULTS / name / p).is_file()]
        lines += [f"![{name} {p[:-4]}](benchmarks/results/{name}/{p})" for p in imgs]
        lines.append("")
    if kinds:
        lines += _kinds_markdown(kinds)
    lines.append(END)
    return "\n".join(lines)


def _kinds_markdown(kinds: dict[str, dict]) -> list[str]:
    """Hand-made features against BirdNET embeddings on each dataset: one table of every trial,
    each dataset's paired test between the kinds' bests and its ensemble across kinds."""
    titles = {"real-kinds": "real sample", "demo-kinds": "demo corpus"}
    values: dict[tuple[str, str], dict[str, str]] = {}
    rank: dict[tuple[str, str], float] = {}  # the first dataset's value orders the rows
    for name, s in kinds.items():
        for t in s["trials"]:
            if t["state"] == "COMPLETE":
                key = (t["params"].get("features"), t["params"].get("model"))
                values.setdefault(key, {})[name] = f"{_pct(t['value'])} ± {_pct(t['std'])}"
                rank.setdefault(key, t["value"])
    order = sorted(values, key=lambda k: -rank[k])
    lines = [
        "#### Hand-made features against BirdNET embeddings",
        "",
        "| features | model | " + " | ".join(f"{titles[n]}: mean CV ± std" for n in kinds) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in kinds) + " |",
    ]
    for key in order:
        cells = " | ".join(values[key].get(n, "-") for n in kinds)
        lines.append(f"| {key[0]} | {key[1]} | {cells} |")
    lines.append("")
    for name, s in kinds.items():
        for c in s.get("kind_comparisons") or []:
            if "comparison" not in c:
                continue
            cmp, best, other = c["comparison"], c["best"], c["other"]
            lines.append(
                f"{titles[name].capitalize()}: best {best['kind']} ({best['family']}) minus best "
                f"{other['kind']} ({other['family']}) {100 * cmp['mean_difference']:+.1f} points "
                f"a fold, corrected resampled t-test p = {cmp['ttest']['pvalue']:.2g}, Wilcoxon "
                f"p = {cmp['wilcoxon']['pvalue']:.2g}"
                + _ensemble_clause(s.get("ensemble") or {})
                + "."
            )
    lines += [
        "BirdNET's model is CC BY-NC-SA 4.0 (the opt-in `birdnet` extra). Reproduce:",
        "",
        "```bash",
        *(c for s in kinds.values() for c in s["_commands"]),
        "```",
        "",
    ]
    return lines


def _ensemble_clause(ens: dict) -> str:
    if not ens.get("best"):
        return ""
    return (
        f"; the top-{ens['k']} ensemble across kinds {_pct(ens['value'])} against "
        f"{_pct(ens['best']['value_from_predictions'])} for the best trial alone"
    )


def update_readme(section: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + section + "\n"
    atomic_write(readme, text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", type=Path, default=REPO.parent / "shared/data/UrbanSound8K")
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "readme_results")
    p.add_argument("--only", nargs="*", choices=sorted(PARTS), default=sorted(PARTS))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, list[str]] = {}
    if (args.real / "metadata" / "UrbanSound8K.csv").is_file():
        datasets["real"] = [f"data.root={args.real.resolve()}", "data.missing=skip"]
    else:
        print(f"no real sample at {args.real}: measuring the demo corpus only")
    datasets["demo"] = [f"data.demo_dir={args.work / 'demo_corpus'}"]
    results: dict[str, dict] = {}
    for part in PARTS:
        for dataset, data_args in datasets.items():
            name = dataset if part == "grid" else f"{dataset}-{part}"
            if part in args.only:
                results[name] = measure(name, data_args, work=args.work, part=part)
            elif (RESULTS / name / "summary.json").is_file():
                results[name] = json.loads((RESULTS / name / "summary.json").read_text())
    section = markdown(results)
    update_readme(section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
