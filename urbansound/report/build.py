"""One report: analysis, figures, the summary model, and the files written from it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urbansound.report import analysis, figures, render, winners
from urbansound.report.load import load_evaluations
from urbansound.report.trials import Sweep, TrialRecord
from urbansound.sweep import records as study_records
from urbansound.utils.files import atomic_write, output_error, write_json

log = logging.getLogger(__name__)

__all__ = ["ReportFiles", "build_report"]


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (a t statistic of ±inf when all per-fold
    differences are equal; a NaN) as None, so that ``summary.json`` is standard JSON that any
    parser reads (Python's ``json`` would write ``Infinity``/``NaN``, which JSON does not have)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote."""

    html: Path
    markdown: Path
    summary: Path
    pngs: list[Path]
    best: TrialRecord | None


def build_report(
    sweep: Sweep,
    *,
    out_dir: str | Path,
    top: int = 5,
    evaluations: Sequence[TrialRecord] | None = None,
    ensemble: int | None = None,
) -> ReportFiles:
    """Write ``report.html``, ``report.md``, ``summary.json`` and PNGs of ``sweep`` into a folder.

    Parameters
    ----------
    sweep:
        From :func:`urbansound.report.load.load_sweep`.
    out_dir:
        Created if needed; files in it are replaced (atomically).
    top:
        How many of the best configurations take part in the paired comparison.
    evaluations:
        Extra evaluation runs (outer fold, random split); default: those found in
        ``out_dir/evaluations``.
    ensemble:
        K: also evaluate the mean class probabilities of the top-K configurations
        (:func:`urbansound.report.winners.ensemble`); None: no ensemble.

    Raises
    ------
    OutputError
        When a file cannot be written.
    ConfigError
        When an ensemble member's ``predictions.npz`` is missing or tested other clips.
    """
    import plotly.offline

    out_dir = Path(out_dir)
    # the ensemble reads other runs' files and can refuse them: before anything is written
    ens = winners.ensemble(sweep, ensemble) if ensemble else None
    try:  # before any work: an unwritable folder is one line, not a traceback after the figures
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(out_dir, exc) from None
    evals = list(load_evaluations(out_dir) if evaluations is None else evaluations)
    best = analysis.best_record(sweep)
    comparisons = analysis.paired_comparisons(sweep, top=top)
    protocols = analysis.protocol_comparison([*sweep.records, *evals])
    outer = analysis.outer_estimates(sweep, evals)
    try:
        importances = study_records.param_importances(sweep.study)
    except Exception as exc:
        log.warning("parameter importances not computed: %s", exc)
        importances = {}
    figs = figures.make_figures(sweep, best, comparisons, protocols, importances, out_dir)
    families = winners.family_bests(sweep)
    summary = analysis.summarize(
        sweep,
        comparisons=comparisons,
        protocols=protocols,
        outer=outer,
        importances=importances,
        pruned=winners.pruned_above_best(sweep),
        families=families,
        family_comparisons=winners.family_comparisons(families),
        ensemble=ens,
    )
    model = render.page_model(sweep, summary, best, figs, out_dir=out_dir)
    # every page is rendered before the first is written, so that a rendering error leaves the
    # previous report's three files as they were (each write itself is atomic)
    html = render.render_html(model, plotly_js=plotly.offline.get_plotlyjs())
    markdown = render.render_markdown(model)
    files = ReportFiles(
        html=atomic_write(out_dir / "report.html", html),
        markdown=atomic_write(out_dir / "report.md", markdown),
        summary=write_json(out_dir / "summary.json", strict_json(summary)),
        pngs=list(figs.pngs.values()),
        best=best,
    )
    return files
