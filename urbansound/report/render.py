"""``report.html`` and ``report.md`` rendered from ONE model with Jinja2 templates.

:func:`page_model` turns the summary (``summary.json``'s dict), the sweep and its figures into
plain values: text, tables (:class:`pandas.DataFrame` of already formatted cells) and paragraphs
as segments (``("text" | "strong" | "code", text)``). The templates in ``templates/`` only lay
them out, one in HTML (self-contained: plotly.js inlined, PNGs embedded), one in Markdown.

Number formats: accuracies, losses and standard deviations with 4 decimals (``0.6800``), other
floats (parameter values) with 4 significant digits (``0.003162``), p-values with 3 significant
digits, durations in seconds with one decimal.
"""

from __future__ import annotations

import base64
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from urbansound.report.analysis import fold_rows, no_folds_note, trial_order
from urbansound.report.figures import Figures
from urbansound.report.trials import LEAKY, Sweep, TrialRecord, fmt_param
from urbansound.sweep.urls import display_storage

__all__ = [
    "TRIAL_COLUMNS",
    "fmt",
    "md_table",
    "page_model",
    "render_html",
    "render_markdown",
    "trials_frame",
]

TRIAL_COLUMNS = ["trial", "state", "value", "std", "protocol", "parameters", "seconds"]
Paragraph = list[tuple[str, str]]


def fmt(v: Any, digits: int = 4) -> str:
    """A metric as shown in tables: ``digits`` decimals; ``–`` for missing, ``∞`` for infinite."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.{digits}f}"
    return str(v)


def fmt_p(v: float | None) -> str:
    """A p-value with 3 significant digits (scientific below 0.001)."""
    if v is None or math.isnan(v):
        return "–"
    return f"{v:.3g}" if v >= 0.001 else f"{v:.1e}"


def _verdict(cmp: Mapping[str, Any], alpha: float = 0.05) -> str:
    pt, pw = cmp["ttest"]["pvalue"], cmp["wilcoxon"]["pvalue"]
    if pt < alpha and pw < alpha:
        return f"significant at {alpha:g} by both tests"
    if pt < alpha or pw < alpha:
        return f"significant at {alpha:g} by one test only"
    return f"not significant at {alpha:g}: the difference is within fold-to-fold noise"


def md_table(df: pd.DataFrame, drop: Sequence[str] = ()) -> str:
    """A table as GitHub Markdown (cells as given; ``|`` escaped)."""
    df = df.drop(columns=[c for c in drop if c in df.columns])
    cells = df.map(lambda c: str(c).replace("|", "\\|"))
    return cells.to_markdown(index=False, disable_numparse=True)


def trials_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """The trials table (formatted cells), in the order given."""
    rows = [
        [
            r.number,
            r.state,
            fmt(r.value),
            fmt(r.std),
            r.protocol() if r.results is not None or r.leaky else "–",
            r.label(),
            fmt(r.duration_s, 1),
            str(r.run_dir) if r.run_dir else (r.error or "–"),
        ]
        for r in records
    ]
    return pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, "run dir"], dtype=object)


def _frame(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    return pd.DataFrame([list(r) for r in rows], columns=list(columns), dtype=object)


def _folds_frame(folds: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return _frame(
        ["fold", "accuracy", "loss", "n_train", "n_test"],
        [
            [
                f.get("fold"),
                fmt(f.get("accuracy")),
                fmt(f.get("loss")),
                fmt(f.get("n_train")),
                fmt(f.get("n_test")),
            ]
            for f in folds
        ],
    )


def _header_notes(summary: Mapping[str, Any], sweep: Sweep) -> list[tuple[str, str]]:
    notes = []
    if "demo" in summary["datasets"]:
        notes.append(
            ("warn", "Dataset: the built-in DEMO corpus (synthetic sounds), not UrbanSound8K.")
        )
    states = summary["states"]
    if summary["n_trials"] and states.get("FAIL") == summary["n_trials"]:
        notes.append(("leaky-note", all_failed_text(sweep)))
    leaky = [r for r in sweep.trials if r.leaky]
    if leaky:
        notes.append(
            (
                "leaky-note",
                f"{len(leaky)} trial(s) used the random 80/20 split ({LEAKY}: slices of one "
                "recording land in both train and test, so their scores are inflated). They are "
                "marked in red and never chosen as the best.",
            )
        )
    best = summary["best"]
    sb = sweep.study.best_number
    if sweep.storage is not None and sb is not None and best is not None and sb != best["number"]:
        notes.append(
            (
                "leaky-note",
                f"Optuna's best trial #{sb} ({fmt(sweep.study.best_value)}) used the {LEAKY} "
                f"random split; the best trial on the predefined folds is #{best['number']}.",
            )
        )
    return notes


def all_failed_text(sweep: Sweep) -> str:
    """One line saying that every trial failed, with the first error recorded."""
    trials = sweep.trials
    first = next((r.error for r in trials if r.error), None)
    text = f"All {len(trials)} trial(s) of study {sweep.name} failed; no result to report."
    return text + (f" First error: {first}" if first else "")


def _src_arg(sweep: Sweep) -> str:
    """The report command's arguments for this sweep, shell-quoted so that it can be pasted
    (study names and paths may hold spaces, quotes, ``$``)."""
    if sweep.storage:
        storage = shlex.quote(display_storage(sweep.storage))
        return f"--storage {storage} --study {shlex.quote(sweep.name)}"
    return " ".join(shlex.quote(str(p)) for p in sweep.paths) or shlex.quote(sweep.source)


def _comparisons(summary: Mapping[str, Any]) -> dict[str, Any]:
    comps = summary["paired_comparisons"]
    if not comps:
        return {"empty": "Needs at least two COMPLETE fold-CV trials with per-fold results."}
    rows = []
    for c in comps:
        other = [f"#{c['other']['number']}", c["other"]["label"]]
        if "comparison" not in c:
            rows.append([*other, "–", "–", "–", "–", c["note"]])
            continue
        cmp = c["comparison"]
        rows.append(
            [
                *other,
                f"{cmp['mean_difference']:+.4f}",
                f"{fmt(cmp['ttest']['statistic'], 2)} (p={fmt_p(cmp['ttest']['pvalue'])})",
                f"p={fmt_p(cmp['wilcoxon']['pvalue'])}",
                len(cmp["folds"]),
                _verdict(cmp),
            ]
        )
    out: dict[str, Any] = {
        "table": _frame(
            ["vs trial", "parameters", "mean diff", "corrected t", "Wilcoxon", "folds", "verdict"],
            rows,
        )
    }
    first = next((c for c in comps if "comparison" in c), None)
    if first:
        cmp = first["comparison"]
        out["caption"] = (
            f"Per-fold accuracies, best #{first['best']['number']} vs #{first['other']['number']}:"
        )
        out["folds"] = _frame(
            ["fold", "best", "other", "difference"],
            [
                [f, fmt(a), fmt(b), f"{d:+.4f}"]
                for f, a, b, d in zip(
                    cmp["folds"], cmp["a"], cmp["b"], cmp["differences"], strict=True
                )
            ],
        )
    return out


def _cmp_cells(entry: Mapping[str, Any]) -> list[Any]:
    if "comparison" not in entry:
        return ["–", "–", "–", "–", entry.get("note", "")]
    cmp = entry["comparison"]
    return [
        f"{cmp['mean_difference']:+.4f}",
        f"{fmt(cmp['ttest']['statistic'], 2)} (p={fmt_p(cmp['ttest']['pvalue'])})",
        f"p={fmt_p(cmp['wilcoxon']['pvalue'])}",
        len(cmp["folds"]),
        _verdict(cmp),
    ]


def winners_model(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Pruned trials above the best, each family's best with the paired tests, the ensemble."""
    pruned = summary["pruned_above_best"]
    out: dict[str, Any] = {
        "pruned": (
            f"{pruned['pruned']} trial(s) pruned; {pruned['above_best']} of them were above the "
            "best completed value at the moment they were pruned"
            + (
                " (trials "
                + ", ".join(
                    f"#{t['number']}: {fmt(t['value'])} at step {t['step']} > {fmt(t['best_then'])}"
                    for t in pruned["trials"]
                )
                + ")."
                if pruned["trials"]
                else "."
            )
        ),
        "families": None,
        "family_folds": None,
        "family_comparisons": None,
        "ensemble": None,
    }
    fams = summary["families"]
    if len(fams) > 1:
        out["families"] = _frame(
            ["family", "best trial", "mean CV", "std", "complete trials", "parameters"],
            [
                [
                    f["family"],
                    f"#{f['number']}",
                    fmt(f["value"]),
                    fmt(f["std"]),
                    f["n_trials"],
                    f["label"],
                ]
                for f in fams
            ],
        )
        folds = list(dict.fromkeys(str(x["fold"]) for f in fams for x in f["folds"]))
        acc = {f["family"]: {str(x["fold"]): x["accuracy"] for x in f["folds"]} for f in fams}
        out["family_folds"] = _frame(
            ["fold", *acc], [[k, *(fmt(acc[f].get(k)) for f in acc)] for k in folds]
        )
        out["family_comparisons"] = _frame(
            [
                "best family",
                "vs family",
                "mean diff",
                "corrected t",
                "Wilcoxon",
                "folds",
                "verdict",
            ],
            [
                [c["best"]["family"], c["other"]["family"], *_cmp_cells(c)]
                for c in summary["family_comparisons"]
            ],
        )
    ens = summary["ensemble"]
    if ens and ens.get("best") is None:  # fewer than two configurations: say why, no tables
        out["ensemble"] = {"text": f"No ensemble: {ens['note']}.", "folds": None}
    elif ens:
        members = ", ".join(f"#{n}" for n in ens["members"])
        best = {str(f["fold"]): f["accuracy"] for f in ens["best"]["folds"]}
        out["ensemble"] = {
            "text": (
                (
                    f"Only {ens['k']} distinct configurations for --ensemble {ens['requested']}. "
                    if ens.get("requested", ens["k"]) > ens["k"]
                    else ""
                )
                + f"Mean class probabilities of the top {ens['k']} configurations ({members}): "
                f"mean CV {fmt(ens['value'])} against {fmt(ens['best']['value_from_predictions'])}"
                f" for the best alone (trial #{ens['best']['number']})."
            ),
            "folds": _frame(
                ["fold", "ensemble", f"best #{ens['best']['number']}"],
                [[f["fold"], fmt(f["accuracy"]), fmt(best[str(f["fold"])])] for f in ens["folds"]],
            ),
            "comparison": _frame(
                ["ensemble vs best", "mean diff", "corrected t", "Wilcoxon", "folds", "verdict"],
                [[f"top {ens['k']} vs #{ens['best']['number']}", *_cmp_cells(ens)]],
            ),
        }
    return out


def _protocols(summary: Mapping[str, Any]) -> pd.DataFrame | None:
    rows = summary["protocol_comparison"]
    if not rows:
        return None
    return _frame(
        [
            "configuration",
            "dataset",
            "predefined folds (mean CV)",
            "random split (LEAKY)",
            "ratio",
        ],
        [
            [
                p["label"],
                p["dataset"],
                f"{fmt(p['folds']['accuracy'])} ± {fmt(p['folds']['std'])} "
                f"({p['folds']['n_folds']} folds)",
                f"{fmt(p['random_split']['accuracy'])} ({LEAKY})",
                f"{p['ratio']:.2f}×" if p["ratio"] else "–",
            ]
            for p in rows
        ],
    )


def outer_paragraphs(summary: Mapping[str, Any], sweep: Sweep, *, out_dir: Path) -> list[Paragraph]:
    """The held-out outer-fold section as paragraphs of segments (empty without an outer fold)."""
    from urbansound.report.evaluations import evaluation_command, evaluation_dir, shown_command

    out: list[Paragraph] = []
    best = {r.number: r for r in sweep.trials}
    for e in summary["outer_estimate"]:
        out.append(
            [
                (
                    "text",
                    f"Fold {e['outer_fold']} was kept out of the search; the search objective of "
                    f"the winner (trial #{e['trial']}, mean CV over folds {e['inner_folds']}) is "
                    f"{fmt(e['search_objective'])}, optimistic because it was maximised over "
                    "trials.",
                )
            ]
        )
        if e["outer_accuracy"] is None:
            para: Paragraph = [
                ("text", "Not evaluated yet: "),
                ("code", f"python -m urbansound.report {_src_arg(sweep)} --evaluate-outer"),
                (
                    "text",
                    f" trains the winner on the other folds and tests it once on fold "
                    f"{e['outer_fold']}",
                ),
            ]
            rec = best.get(e["trial"])
            if rec is not None and rec.results is not None:
                argv = evaluation_command(
                    rec, kind="outer", run_dir=evaluation_dir(out_dir, rec, "outer")
                )
                para += [("text", ", by running "), ("code", shown_command(argv))]
            out.append([*para, ("text", ".")])
        else:
            out.append(
                [
                    (
                        "strong",
                        f"Held-out fold {e['outer_fold']}: accuracy {fmt(e['outer_accuracy'])}",
                    ),
                    (
                        "text",
                        f" ({e.get('n_test', '?')} test clips, trained on "
                        f"{e.get('n_train', '?')}; run ",
                    ),
                    ("code", str(e["run_dir"])),
                    ("text", ")."),
                ]
            )
    return out


def page_model(
    sweep: Sweep,
    summary: Mapping[str, Any],
    best: TrialRecord | None,
    figs: Figures,
    *,
    out_dir: Path,
) -> dict[str, Any]:
    """Everything either page shows, as plain values (see the module docstring)."""
    states = ", ".join(f"{v} {k}" for k, v in sorted(summary["states"].items()))
    model: dict[str, Any] = {
        "name": sweep.name,
        "source": sweep.source,
        "direction": sweep.direction,
        "datasets": ", ".join(summary["datasets"]) or "–",
        "n_trials": summary["n_trials"],
        "states": states,
        "generated": summary["generated"],
        "fixed": " ".join(f"{k}={fmt_param(v)}" for k, v in sorted(sweep.fixed.items())),
        "notes": _header_notes(summary, sweep),
        "best": None,
        "trials": trials_frame(trial_order(sweep)),
        "comparisons": _comparisons(summary),
        "winners": winners_model(summary),
        "protocols": _protocols(summary),
        "src_arg": _src_arg(sweep),
        "outer": outer_paragraphs(summary, sweep, out_dir=out_dir),
        "importances": _frame(
            ["parameter", "importance"], [[k, fmt(v, 3)] for k, v in summary["importances"].items()]
        )
        if summary["importances"]
        else None,
        "pngs": {name: path.name for name, path in figs.pngs.items()},
        "png_data": {name: _png_b64(path) for name, path in figs.pngs.items()},
        "divs": {key: _plotly_div(fig, f"plot-{key}") for key, fig in figs.divs.items()},
        "plot_notes": dict(figs.notes),
    }
    if best is not None:
        model["best"] = {
            "number": best.number,
            "value": fmt(best.value),
            "std": fmt(best.std),
            "n_folds": len(best.folds),
            "protocol": best.protocol(),
            "n_test": sum(f.n_test for f in best.folds),
            "pooled": fmt(best.pooled_accuracy),
            "label": best.label(),
            "run_dir": str(best.run_dir),
            "folds": _folds_frame(fold_rows(best)),
            "missing": None if best.folds else no_folds_note(best),
        }
    return model


def _plotly_div(fig: Any, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def _png_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _env(*, html: bool) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("urbansound.report", "templates"),
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_table"] = md_table
    env.globals["LEAKY"] = LEAKY
    return env


def render_markdown(model: Mapping[str, Any]) -> str:
    """``report.md`` from :func:`page_model`'s model."""
    return _env(html=False).get_template("report.md.j2").render(m=model)


def render_html(model: Mapping[str, Any], *, plotly_js: str) -> str:
    """``report.html`` from :func:`page_model`'s model, with plotly.js inlined."""
    return _env(html=True).get_template("report.html.j2").render(m=model, plotly_js=plotly_js)
