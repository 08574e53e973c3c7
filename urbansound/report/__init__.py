"""Sweep reports: ``python -m urbansound.report <sweep dir>... | --storage URL --study NAME``.

Reads a study's trials (from its Optuna storage through :mod:`urbansound.sweep.records`, or from
the job directories of a sweep, each with its ``results.json``) and writes into one folder
(default ``<sweep dir>/report`` or ``outputs/reports/<study>``):

- ``report.html``: a self-contained page (plotly.js inlined, PNGs embedded; no network needed):
  the trials sorted by value, the best configuration with its per-fold accuracies, Optuna's
  optimisation history, parameter importances and parallel coordinates, per-epoch CV curves,
  the best trial's confusion matrix and per-class accuracy, the paired comparison of the top
  configurations across folds, the protocol comparison (predefined folds next to the LEAKY random
  split) and the held-out outer-fold estimate;
- ``report.md``: the same model rendered as Markdown, linking the PNG copies of the key plots;
- ``summary.json``: the numbers, machine-readable;
- ``*.png``: matplotlib copies of the key plots.

Two optional evaluations run the best configuration once more as ``python -m urbansound.run``
subprocesses (``--evaluate-outer``, ``--random-split``; see :mod:`.evaluations`); their run
directories go to ``<report dir>/evaluations/`` and the report reads their ``results.json``.

Modules: :mod:`.load` (sweep and run directories), :mod:`.analysis` (ranking, paired
comparisons, protocols, outer estimates, the summary), :mod:`.figures`, :mod:`.render` (Jinja2
templates for HTML and Markdown), :mod:`.evaluations`, :mod:`.build` (one report) and
:mod:`.cli` (the command line).
"""

from urbansound.report.analysis import (
    best_record,
    outer_estimates,
    paired_comparisons,
    protocol_comparison,
)
from urbansound.report.build import ReportFiles, build_report
from urbansound.report.cli import main, parse_args
from urbansound.report.evaluations import evaluate_outer, evaluate_random_split
from urbansound.report.load import (
    Sweep,
    TrialRecord,
    find_run_dirs,
    load_evaluations,
    load_sweep,
)

__all__ = [
    "ReportFiles",
    "Sweep",
    "TrialRecord",
    "best_record",
    "build_report",
    "evaluate_outer",
    "evaluate_random_split",
    "find_run_dirs",
    "load_evaluations",
    "load_sweep",
    "main",
    "outer_estimates",
    "paired_comparisons",
    "parse_args",
    "protocol_comparison",
]
