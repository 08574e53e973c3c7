"""The report's figures: interactive plotly ones for the HTML page, matplotlib PNG copies.

Optuna's own visualisations (optimisation history, importances, parallel coordinates) come from
:mod:`urbansound.sweep.records`, which rebuilds a study from plain records; this module never
imports Optuna. Every figure is drawn inside :func:`make_figures` under a guard: one figure that
cannot be drawn is noted in the report and costs nothing else. Epoch and trial axes show integer
ticks only.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from urbansound.experiment import plots
from urbansound.report.trials import LEAKY, Sweep, TrialRecord
from urbansound.sweep import records as study_records
from urbansound.training.metrics import summed_confusion
from urbansound.training.results import RunResult, history_row

log = logging.getLogger(__name__)

__all__ = [
    "Figures",
    "epochs_figure",
    "fold_comparison_figure",
    "history_png_figure",
    "integer_dtick",
    "integer_ticks",
    "make_figures",
    "protocol_comparison_figure",
]

LEAKY_COLOR = "#d62728"
CV_COLOR = plots.CV_COLOR


@dataclass
class Figures:
    """What :func:`make_figures` drew."""

    divs: dict[str, Any] = field(default_factory=dict)  # section -> plotly figure
    pngs: dict[str, Path] = field(default_factory=dict)  # name -> png path
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is missing


def _wrap(text: str, *, width: int = 24, lines: int = 3) -> str:
    """A long label on a few short lines (cut with an ellipsis past ``lines``)."""
    return "\n".join(textwrap.wrap(text, width=width, max_lines=lines, placeholder=" …")) or text


def integer_dtick(n: int) -> int:
    """A tick step (1, 2, 5, 10, 20, 50, ...) giving at most about ten ticks over ``n`` values."""
    step = 1
    while n / step > 10:
        for m in (2, 5, 10):
            if n / (step * m) <= 10 or m == 10:
                step *= m
                break
    return step


def integer_ticks(fig: Figure) -> Figure:
    """``fig`` with integer-only ticks on every x axis (epochs, trials); returned for chaining."""
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def fold_comparison_figure(
    folds: Sequence[int | str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "Per-fold accuracy of the top configurations",
) -> Figure:
    """One line per configuration over the same folds (paired comparison at a glance)."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(folds))
    for label, vals in series.items():
        ax.plot(x, vals, marker="o", linewidth=1, label=_wrap(label, width=40))
    ax.set_xticks(x, [str(f) for f in folds])
    ax.set_xlabel("test fold")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


def protocol_comparison_figure(
    labels: Sequence[str],
    fold_cv: Sequence[float | None],
    random_split: Sequence[float | None],
    *,
    title: str = "Same configuration, two protocols",
) -> Figure:
    """Paired bars: fold-CV accuracy next to the LEAKY random-split accuracy per configuration."""
    fig = Figure(figsize=(1.5 + 1.6 * len(labels), 3.8), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    labels = [_wrap(label) for label in labels]
    w = 0.38
    cv = np.array([np.nan if v is None else v for v in fold_cv], dtype=float)
    rs = np.array([np.nan if v is None else v for v in random_split], dtype=float)
    b1 = ax.bar(x - w / 2, np.nan_to_num(cv), w, color=CV_COLOR, label="predefined folds")
    b2 = ax.bar(
        x + w / 2, np.nan_to_num(rs), w, color=LEAKY_COLOR, label="random 80/20 split (LEAKY)"
    )
    for bars, vals in ((b1, cv), (b2, rs)):
        for bar, v in zip(bars, vals, strict=True):
            if not np.isnan(v):
                ax.text(
                    bar.get_x() + bar.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", fontsize=8
                )
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def history_png_figure(sweep: Sweep) -> Figure:
    """Optuna's matplotlib optimisation history of the fold-CV trials, the LEAKY ones added as
    red crosses (left out of the best-so-far line)."""
    leaky = {r.number for r in sweep.trials if r.leaky}
    honest = [t for t in sweep.study.trials if t.number not in leaky]
    fig = study_records.optimization_history_figure(
        honest, direction=sweep.direction, backend="matplotlib"
    )
    flagged = [r for r in sweep.trials if r.leaky and r.value is not None]
    if flagged:
        ax = fig.axes[0]
        ax.scatter(
            [r.number for r in flagged],
            [r.value for r in flagged],
            color=LEAKY_COLOR,
            marker="x",
            s=30,
            label="trial (random split, LEAKY)",
            zorder=3,
        )
        ax.legend(fontsize=8)
    return integer_ticks(fig)


def epochs_figure(curves: Sequence[TrialRecord], best: TrialRecord | None) -> Any:
    """Plotly: mean CV test accuracy per epoch of each trial (bold: ``best``)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    n_epochs = 1
    for r in curves:
        epochs = r.results.epochs if r.results is not None else []
        n_epochs = max(n_epochs, len(epochs))
        is_best = best is not None and r is best
        fig.add_trace(
            go.Scatter(
                x=[m.epoch for m in epochs],
                y=[m.mean_test_accuracy for m in epochs],
                mode="lines",
                name=f"{r.name} {r.label()}" + (f" ({LEAKY})" if r.leaky else ""),
                line={"width": 3 if is_best else 1},
                opacity=1.0 if is_best else 0.6,
            )
        )
    fig.update_layout(
        title="Mean CV test accuracy per epoch (bold: best trial)",
        xaxis_title="epoch",
        yaxis_title="mean test accuracy over folds",
    )
    fig.update_xaxes(tickformat="d", tick0=0, dtick=integer_dtick(n_epochs))
    return fig


def _importance_bars(importances: Mapping[str, float]) -> Any:
    import plotly.graph_objects as go

    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h"))
    fig.update_layout(
        title="Hyperparameter importances (fANOVA, seed 0)",
        xaxis_title="importance",
        height=200 + 30 * len(items),
    )
    return fig


def _confusion_heatmap(cm: np.ndarray, names: Sequence[str], title: str) -> Any:
    import plotly.graph_objects as go

    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    heat = go.Figure(
        go.Heatmap(
            z=share,
            x=list(names),
            y=list(names),
            text=cm,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "share"},
        )
    )
    heat.update_layout(
        title=title,
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis={"autorange": "reversed"},
        height=600,
    )
    return heat


def make_figures(
    sweep: Sweep,
    best: TrialRecord | None,
    comparisons: Sequence[dict[str, Any]],
    protocols: Sequence[dict[str, Any]],
    importances: Mapping[str, float],
    out_dir: Path,
) -> Figures:
    """Draw every figure of the report; PNGs are written into ``out_dir``."""
    figs = Figures()
    done = [r for r in sweep.trials if r.state == "COMPLETE" and r.value is not None]

    def attempt(section: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # one plot that cannot be drawn must not cost the report
            log.warning("plot %s not drawn: %s", section, exc)
            figs.notes[section] = f"not drawn: {exc}"

    def png(name: str, fig: Figure) -> None:
        figs.pngs[name] = plots.save_figure(fig, out_dir / f"{name}.png")

    if done:

        def history() -> None:
            fig = study_records.optimization_history_figure(sweep.study)
            fig.update_xaxes(tickformat="d", dtick=integer_dtick(len(sweep.study.trials)))
            figs.divs["history"] = fig
            png("optimization_history", history_png_figure(sweep))

        attempt("history", history)
    else:
        figs.notes["history"] = "no COMPLETE trial yet"

    if importances:

        def importance() -> None:
            figs.divs["importances"] = _importance_bars(importances)
            png("param_importances", study_records.param_importances_figure(sweep.study))

        attempt("importances", importance)
    else:
        figs.notes["importances"] = "needs at least two COMPLETE trials with parameters"

    if len(done) >= 2 and any(r.params for r in done):

        def parallel() -> None:
            figs.divs["parallel"] = study_records.parallel_coordinate_figure(sweep.study)

        attempt("parallel", parallel)
    else:
        figs.notes["parallel"] = "needs at least two COMPLETE trials with parameters"

    curves = [r for r in sweep.trials if r.results is not None and r.results.epochs]
    if curves:
        attempt("epochs", lambda: figs.divs.__setitem__("epochs", epochs_figure(curves, best)))
    else:
        figs.notes["epochs"] = "no trial recorded per-epoch history"

    if best is not None and best.results is not None:
        _best_figures(best, best.results, figs, attempt, png)

    with_folds = [c for c in comparisons if "comparison" in c]
    if with_folds:

        def folds_fig() -> None:
            folds = with_folds[0]["comparison"]["folds"]
            series = {f"best #{with_folds[0]['best']['number']}": with_folds[0]["comparison"]["a"]}
            for c in with_folds:
                if c["comparison"]["folds"] == folds:
                    series[f"#{c['other']['number']}"] = c["comparison"]["b"]
            png("fold_comparison", fold_comparison_figure(folds, series))

        attempt("fold_comparison", folds_fig)

    if protocols:

        def protocols_fig() -> None:
            fig = protocol_comparison_figure(
                [p["label"] for p in protocols],
                [p["folds"]["accuracy"] for p in protocols],
                [p["random_split"]["accuracy"] for p in protocols],
            )
            png("protocol_comparison", fig)

        attempt("protocols", protocols_fig)
    return figs


def _best_figures(
    best: TrialRecord,
    res: RunResult,
    figs: Figures,
    attempt: Callable[[str, Callable[[], None]], None],
    png: Callable[[str, Figure], None],
) -> None:
    names = list(res.class_names)
    title = f"best trial {best.name}: {best.label()}"
    if res.epochs:

        def epochs() -> None:
            history = [history_row(m) for m in res.epochs]  # as results.json lists them
            fig = plots.epoch_curves_figure(history, title=title)
            png("best_epoch_curves", fig)  # integer epoch ticks already

        attempt("best_epochs", epochs)
    if names and any(f.confusion for f in best.folds):

        def confusion() -> None:
            cm = summed_confusion(best.folds)
            figs.divs["confusion"] = _confusion_heatmap(
                cm, names, f"Confusion matrix of trial {best.name} (summed over test folds)"
            )
            png("confusion_matrix", plots.confusion_matrix_figure(cm, names, title=title))
            rows = cm.sum(axis=1)
            acc = [float(cm[i, i] / rows[i]) if rows[i] else None for i in range(len(names))]
            png(
                "per_class_accuracy",
                plots.per_class_accuracy_figure(
                    acc, names, title="Per-class accuracy (pooled over test folds)"
                ),
            )

        attempt("confusion", confusion)
