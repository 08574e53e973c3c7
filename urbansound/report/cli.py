"""``python -m urbansound.report``: the command line (arguments, evaluations, console output).

Exit status: 0 when the report was written (also when every trial of the study failed: the
report lists the failures and one printed line says so); 2 with one ``error:`` line for a user
error (no such directory, no study, a storage that cannot be opened, an evaluation that failed,
a report folder that cannot be written); 130 with one line on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from urbansound.config.app import run_command
from urbansound.errors import ConfigError
from urbansound.report import analysis, evaluations, render
from urbansound.report.build import build_report
from urbansound.report.load import load_sweep
from urbansound.report.trials import LEAKY, Sweep

__all__ = ["console_table", "default_out", "main", "parse_args"]


def console_table(sweep: Sweep, *, limit: int = 15) -> str:
    """The printed trial table (best first, at most ``limit`` rows)."""
    rows = analysis.trial_order(sweep)
    if not rows:
        return "(no trials)"
    frame = pd.DataFrame(
        [
            [
                r.number,
                r.state,
                render.fmt(r.value),
                render.fmt(r.std),
                f"random_split ({LEAKY})"
                if r.leaky
                else ("folds" if r.results is not None else "–"),
                r.label(),
            ]
            for r in rows[:limit]
        ],
        columns=["trial", "state", "value", "std", "protocol", "parameters"],
        dtype=object,
    )
    text = frame.to_string(index=False)
    if len(rows) > limit:
        text += f"\n... {len(rows) - limit} more in the report"
    return text


def default_out(args: argparse.Namespace, sweep: Sweep | None) -> Path:
    """``--out``; else ``<sweep dir>/report`` (one directory) or ``outputs/reports/<study>``."""
    if args.out:
        return Path(args.out)
    if len(args.paths) == 1:
        return Path(args.paths[0]) / "report"
    name = sweep.name if sweep is not None else "report"
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path("outputs") / "reports" / slug


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's arguments (``--help`` lists them)."""
    p = argparse.ArgumentParser(
        prog="python -m urbansound.report",
        description="Write an HTML + Markdown report of a sweep (its directory, or an Optuna "
        "storage and study name).",
    )
    p.add_argument("paths", nargs="*", help="sweep directories or run directories")
    p.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///outputs/optuna.db")
    p.add_argument("--study", help="study name (needed when the storage holds several)")
    p.add_argument(
        "--password-env",
        metavar="NAME",
        help="environment variable holding the storage's password (a URL with a password is "
        "refused; PostgreSQL also reads PGPASSWORD and ~/.pgpass)",
    )
    p.add_argument(
        "--out", help="report folder (default <sweep dir>/report or outputs/reports/<study>)"
    )
    p.add_argument("--top", type=int, default=5, help="configurations in the paired comparison")
    p.add_argument(
        "--evaluate-outer",
        action="store_true",
        help="run the winner on all folds but the held-out cv.outer_fold and test it there once "
        "(python -m urbansound.run ... cv.evaluate_outer=true)",
    )
    p.add_argument(
        "--random-split",
        action="store_true",
        help="also run the winner on the LEAKY random 80/20 split (protocol comparison)",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        metavar="K",
        help="also score the average class probabilities of the top-K configurations "
        "(their runs' predictions.npz, same folds) beside the single best",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if not args.paths and not args.storage:
        p.error("give a sweep directory or --storage URL (with --study NAME)")
    if args.top < 2:
        p.error("--top must be at least 2")
    if args.ensemble is not None and args.ensemble < 2:
        p.error("--ensemble must be at least 2")
    return args


def _evaluate(args: argparse.Namespace, sweep: Sweep, out_dir: Path) -> None:
    best = analysis.best_record(sweep)
    if best is None:
        raise ConfigError(
            f"{sweep.source}: no COMPLETE fold-CV trial to evaluate; let the sweep finish "
            "at least one trial"
        )
    progress = not args.no_progress
    if args.evaluate_outer:
        dest = evaluations.evaluation_dir(out_dir, best, "outer")
        res = evaluations.evaluate_outer(best, out_dir=dest, progress=progress)
        print(
            f"held-out fold {best.outer_fold}: accuracy {res.mean_accuracy:.4f} "
            f"(search objective {best.value:.4f}) -> {dest}"
        )
    if args.random_split:
        dest = evaluations.evaluation_dir(out_dir, best, "random_split")
        res = evaluations.evaluate_random_split(best, out_dir=dest, progress=progress)
        print(
            f"random split ({LEAKY}): accuracy {res.mean_accuracy:.4f} vs predefined "
            f"folds {best.value:.4f} -> {dest}"
        )


def _print_winners(summary_path: Path) -> None:
    """The console lines for pruned winners, the families' bests and the ensemble."""
    import json

    summary = json.loads(summary_path.read_text())
    pruned = summary["pruned_above_best"]
    if pruned["pruned"]:
        print(
            f"pruned: {pruned['pruned']} trials, {pruned['above_best']} of them above the best "
            "completed value when pruned"
        )
    if len(summary["families"]) > 1:
        for fam in summary["families"]:
            print(
                f"family {fam['family']}: best trial #{fam['number']} = {fam['value']:.4f} "
                f"({fam['n_trials']} complete)"
            )
    ens = summary["ensemble"]
    if ens and ens.get("best") is None:
        print(f"no ensemble: {ens['note']}")
    elif ens:
        line = (
            f"ensemble of the top {ens['k']} ({', '.join(f'#{n}' for n in ens['members'])}): "
            f"{ens['value']:.4f} vs best #{ens['best']['number']} "
            f"{ens['best']['value_from_predictions']:.4f}"
        )
        cmp = ens.get("comparison")
        if cmp:
            line += f" (corrected t-test p={cmp['ttest']['pvalue']:.3g})"
        if ens.get("requested", ens["k"]) > ens["k"]:
            line += f"; only {ens['k']} distinct configurations for --ensemble {ens['requested']}"
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (module docstring)."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    args = parse_args(argv)
    out_dirs: list[Path] = []  # the report folder, once the study has named it

    def interrupted() -> str:  # every file is written atomically: none is left half-written
        out_dir = out_dirs[-1] if out_dirs else None
        if out_dir is None and (args.out or len(args.paths) == 1):
            out_dir = default_out(args, None)  # the same folder, named before the study loaded
        where = f" in {out_dir}" if out_dir is not None else ""
        return (
            f"the report{where} is not complete (no file of it is half-written): run the same "
            "command again"
        )

    return run_command(lambda: _report(args, out_dirs), interrupted=interrupted)


def _report(args: argparse.Namespace, out_dirs: list[Path]) -> int:
    sweep = load_sweep(
        args.paths, storage=args.storage, study_name=args.study, password_env=args.password_env
    )
    out_dir = default_out(args, sweep)
    out_dirs.append(out_dir)
    if args.evaluate_outer or args.random_split:
        _evaluate(args, sweep, out_dir)
    files = build_report(sweep, out_dir=out_dir, top=args.top, ensemble=args.ensemble)
    print(f"study {sweep.name} ({sweep.source})")
    print(console_table(sweep))
    if files.best is not None:
        print(f"best (predefined folds): trial #{files.best.number} = {files.best.value:.4f}")
    elif analysis.all_failed(sweep):
        print(render.all_failed_text(sweep))
    else:
        print("no COMPLETE trial on the predefined folds yet")
    _print_winners(files.summary)
    print(f"report: {files.html}\nmarkdown: {files.markdown}\nsummary: {files.summary}")
    return 0
