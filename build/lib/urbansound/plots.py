"""Matplotlib figures: per run, per dataset, per sweep.

Every ``*_figure`` function returns a :class:`matplotlib.figure.Figure` built without pyplot (no
global figure state, no GUI backend, safe in worker processes); :func:`save_figure` writes one
atomically and closes nothing that the caller still holds. The tracking module logs the same
figures to Comet; :mod:`urbansound.report` saves PNG copies of the sweep report's plots.

Per run, :func:`run_figures` writes ``figures/confusion_matrix.png`` (summed over the test folds)
and ``figures/epoch_curves.png`` into the run directory and links the class examples there. Per
dataset, :func:`dataset_figures` draws what the tutorial showed for one clip of each class, a
waveform and an MFCC image, once: the PNGs are cached under a key of the chosen clips and feature
settings, and later runs link them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from urbansound.config import FeatureSettings

log = logging.getLogger(__name__)

__all__ = [
    "class_example_figure",
    "confusion_matrix_figure",
    "dataset_figure_settings",
    "dataset_figures",
    "epoch_curves_figure",
    "fold_comparison_figure",
    "link_or_copy",
    "param_importance_figure",
    "per_class_accuracy_figure",
    "protocol_comparison_figure",
    "run_figures",
    "save_figure",
    "summed_confusion",
    "sweep_history_figure",
    "write_run_figures",
]

FIGURES_DIR = "figures"
LEAKY_COLOR = "#d62728"
CV_COLOR = "#1f77b4"


def save_figure(
    fig: Figure, path: str | Path, *, dpi: int = 110, tight: bool | None = None
) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (a temporary file, then a rename).

    ``tight`` crops to the drawn content (``bbox_inches="tight"``, one extra draw); by default
    only for figures without a layout engine (constrained layout already fits them).
    """
    if tight is None:
        tight = fig.get_layout_engine() is None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight" if tight else None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def link_or_copy(src: str | Path, dst: str | Path) -> Path:
    """Hard-link ``src`` to ``dst`` (copy where linking is impossible); replace an existing dst."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------
# Per run


def summed_confusion(folds: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The confusion matrices of ``results.json``'s folds summed (rows = true class)."""
    mats = [np.asarray(f["confusion"], dtype=np.int64) for f in folds if f.get("confusion")]
    if not mats:
        raise ValueError("no fold has a confusion matrix")
    return np.sum(mats, axis=0)


def confusion_matrix_figure(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "Confusion matrix",
) -> Figure:
    """Confusion matrix: colour = share of each true class (row), text = count."""
    cm = np.asarray(confusion, dtype=np.int64)
    n = cm.shape[0]
    if cm.shape != (n, n) or len(class_names) != n:
        raise ValueError(f"confusion must be {len(class_names)}x{len(class_names)}, got {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    fig = Figure(figsize=(1.0 + 0.62 * n, 0.8 + 0.55 * n), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")
    ax.set_title(f"{title}\n{int(cm.sum())} test clips, accuracy {acc:.3f}", fontsize=10)
    return fig


def per_class_accuracy_figure(
    accuracy: Sequence[float | None],
    class_names: Sequence[str],
    *,
    title: str = "Per-class accuracy",
) -> Figure:
    """Horizontal bars of accuracy per class (a class with no test clip is marked n/a)."""
    fig = Figure(figsize=(6.0, 0.8 + 0.32 * len(class_names)), layout="constrained")
    ax = fig.add_subplot()
    vals = [np.nan if a is None else float(a) for a in accuracy]
    y = np.arange(len(class_names))
    ax.barh(y, np.nan_to_num(vals), color=CV_COLOR)
    for yi, v in zip(y, vals, strict=True):
        ax.text(
            min(np.nan_to_num(v) + 0.01, 0.93),
            yi,
            "n/a" if np.isnan(v) else f"{v:.2f}",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, class_names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title(title, fontsize=10)
    return fig


def epoch_curves_figure(history: Sequence[Mapping[str, Any]], *, title: str = "") -> Figure:
    """Per-epoch curves of a cross-validated run: losses (mean over folds) and test accuracy.

    ``history`` is ``results.json``'s list of epochs (``epoch``, ``train_loss[]``,
    ``test_loss[]``, ``test_accuracy[]``): one thin line per fold and the mean in bold.
    """
    if not history:
        raise ValueError("history is empty")
    epochs = np.array([h["epoch"] for h in history])
    acc = np.array([h["test_accuracy"] for h in history], dtype=float)  # (epochs, folds)
    trl = np.array([h["train_loss"] for h in history], dtype=float)
    tel = np.array([h["test_loss"] for h in history], dtype=float)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, trl.mean(axis=1), label="train loss", color="#2ca02c")
    ax1.plot(epochs, tel.mean(axis=1), label="test loss", color="#ff7f0e")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy (mean over folds)")
    ax1.legend(fontsize=8)
    ax2.plot(epochs, acc, color="0.6", linewidth=0.7, alpha=0.7)
    ax2.plot(epochs, acc.mean(axis=1), color=CV_COLOR, linewidth=2, label="mean over folds")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy (thin: one per fold)")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def write_run_figures(
    run_dir: str | Path, results: Mapping[str, Any], *, class_names: Sequence[str] | None = None
) -> list[Path]:
    """Write a run's own figures into ``run_dir/figures``.

    ``confusion_matrix.png`` (summed over the test folds) and ``epoch_curves.png``, from the run's
    ``results.json`` content; a figure whose data is absent (a pruned run has no confusion matrix)
    is skipped. Returns the paths written.
    """
    out = Path(run_dir) / FIGURES_DIR
    names = list(class_names or results.get("class_names") or [])
    label = _protocol_label(results)
    title = f"{results.get('dataset', '')} · {label}"
    written: list[Path] = []
    folds = results.get("folds") or []
    if names and any(f.get("confusion") for f in folds):
        cm = summed_confusion(folds)
        fig = confusion_matrix_figure(cm, names, title=f"{title} · summed over test folds")
        written.append(save_figure(fig, out / "confusion_matrix.png"))
    history = results.get("history") or []
    if history:
        written.append(
            save_figure(epoch_curves_figure(history, title=title), out / "epoch_curves.png")
        )
    return written


def run_figures(
    run_dir: str | Path,
    results: Mapping[str, Any],
    *,
    clips: Any,
    features: FeatureSettings,
) -> list[Path]:
    """Every per-run figure: :func:`write_run_figures` plus the dataset's class examples.

    The class examples (:func:`dataset_figures`) are cached in ``figures/`` beside the feature
    cache (``features.cache_dir``'s parent) and linked into ``run_dir/figures``.
    """
    written = write_run_figures(run_dir, results)
    written += dataset_figures(
        clips,
        class_names=list(results.get("class_names") or []),
        dataset=str(results.get("dataset") or "dataset"),
        dest=Path(run_dir) / FIGURES_DIR,
        **dataset_figure_settings(features),
    )
    return written


def dataset_figure_settings(features: FeatureSettings) -> dict[str, Any]:
    """The keyword arguments of :func:`dataset_figures` that follow a run's feature settings.

    The class examples are cached in ``figures/`` beside the feature cache.
    """
    return {
        "cache_dir": Path(features.cache_dir).parent / "figures",
        "sr": features.sr,
        "n_mfcc": features.n_mfcc,
        "n_fft": features.n_fft,
        "hop_length": features.hop_length,
        "n_mels": features.n_mels,
        "fmin": features.fmin,
        "fmax": features.fmax,
    }


def _protocol_label(results: Mapping[str, Any]) -> str:
    protocol = str(results.get("protocol") or "folds")
    leaky = results.get("leaky") or protocol.startswith("random_split")
    return f"{protocol} (LEAKY)" if leaky and "LEAKY" not in protocol else protocol


# ---------------------------------------------------------------------------------------------
# Per dataset (the tutorial's waveform and MFCC image of one clip per class)


def _waveform(ax: Any, y: np.ndarray, *, sr: int) -> None:
    """Waveform as ``librosa.display.waveshow`` draws a long clip: a min/max envelope per bucket
    of samples (thousands of filled buckets instead of ~10^5 line segments: much faster)."""
    n = len(y)
    if n <= 4000:
        ax.plot(np.arange(n) / sr, y, color=CV_COLOR, linewidth=0.8)
    else:
        starts = np.linspace(0, n, 2001).astype(np.int64)[:-1]
        lo, hi = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
        ax.fill_between(starts / sr, lo, hi, color=CV_COLOR, linewidth=0, step="post")
    ax.set_xlim(0, n / sr)
    ax.set_xlabel("time (s)")


def class_example_figure(
    y: np.ndarray, mfcc: np.ndarray, *, sr: int, hop_length: int, title: str
) -> Figure:
    """The tutorial's two pictures of one clip in one figure: its waveform above its MFCC image."""
    import librosa.display

    fig = Figure(figsize=(7, 4.6))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.9, hspace=0.45)
    ax_wave, ax_mfcc = fig.subplots(2, 1)
    _waveform(ax_wave, y, sr=sr)
    ax_wave.set_ylabel("amplitude")
    ax_wave.set_xlabel("")
    librosa.display.specshow(mfcc, sr=sr, hop_length=hop_length, x_axis="time", ax=ax_mfcc)
    ax_mfcc.set_ylabel(f"MFCC 1-{mfcc.shape[0]}")
    fig.suptitle(f"{title}: waveform and MFCC", fontsize=10)
    return fig


def _overview_figure(
    examples: Sequence[tuple[str, np.ndarray, np.ndarray]], *, sr: int, hop_length: int
) -> Figure:
    import librosa.display

    fig = Figure(figsize=(12, 0.4 + 1.5 * len(examples)))
    fig.subplots_adjust(
        left=0.1,
        right=0.98,
        bottom=0.02,
        top=1 - 0.4 / (0.4 + 1.5 * len(examples)),
        hspace=0.35,
        wspace=0.12,
    )
    axes = fig.subplots(len(examples), 2, squeeze=False)
    for row, (name, y, mfcc) in zip(axes, examples, strict=True):
        _waveform(row[0], y, sr=sr)
        row[0].set_ylabel(name, fontsize=9)
        row[0].set_xlabel("")
        librosa.display.specshow(mfcc, sr=sr, hop_length=hop_length, x_axis="time", ax=row[1])
        row[1].set_xlabel("")
    axes[0][0].set_title("waveform")
    axes[0][1].set_title("MFCC")
    return fig


def _wrap(text: str, *, width: int = 24, lines: int = 3) -> str:
    """A long label on a few short lines (cut with an ellipsis past ``lines``)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width=width, max_lines=lines, placeholder=" …")) or text


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_") or "class"


def dataset_figures(
    clips: Any,
    *,
    class_names: Sequence[str],
    dataset: str,
    cache_dir: str | Path,
    sr: int = 22050,
    n_mfcc: int = 40,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    dest: str | Path | None = None,
) -> list[Path]:
    """A waveform and an MFCC image of one clip per class, made once per dataset.

    The first decodable clip of each class (in the metadata's order) is drawn, as the tutorial
    did with ``librosa.load`` and ``librosa.feature.mfcc``. The PNGs (``class_<id>_<class>.png``
    with both pictures of one class, and ``classes_overview.png`` with all classes) are cached in
    ``cache_dir/<dataset>-<key>/``, the key covering the chosen clips (path, size, mtime) and the
    settings, so a sweep draws them once; with ``dest`` they are also linked there.

    Parameters
    ----------
    clips:
        The dataset index's ``clips`` DataFrame (columns ``path``, ``classID``).
    class_names:
        Class names by classID.

    Returns
    -------
    list of Path
        The PNGs (in ``dest`` when given, else in the cache).
    """
    import librosa

    settings = {
        "sr": sr,
        "n_mfcc": n_mfcc,
        "n_fft": n_fft,
        "hop_length": hop_length,
        "n_mels": n_mels,
        "fmin": fmin,
        "fmax": fmax,
        "librosa": librosa.__version__,
    }
    candidates: dict[int, list[str]] = {}
    for path, cid in zip(clips["path"], clips["classID"], strict=True):
        lst = candidates.setdefault(int(cid), [])
        if len(lst) < 3:
            lst.append(str(path))
    ident = [
        (p, os.stat(p).st_size, os.stat(p).st_mtime_ns)
        for cid in sorted(candidates)
        for p in candidates[cid]
        if os.path.exists(p)
    ]
    key = hashlib.sha1(json.dumps([dataset, settings, ident], sort_keys=True).encode()).hexdigest()[
        :12
    ]
    out = Path(cache_dir) / f"{_slug(dataset)}-{key}"
    if not (out / "done.json").is_file():
        _draw_dataset_figures(
            candidates, out, class_names=class_names, settings=settings, dataset=dataset
        )
    else:
        log.debug("class example figures cached in %s", out)
    files = sorted(out.glob("*.png"))
    if dest is None:
        return files
    return [link_or_copy(p, Path(dest) / p.name) for p in files]


def _draw_dataset_figures(
    candidates: Mapping[int, Sequence[str]],
    out: Path,
    *,
    class_names: Sequence[str],
    settings: Mapping[str, Any],
    dataset: str,
) -> None:
    import librosa

    from urbansound.audio import load_audio

    sr, hop = int(settings["sr"]), int(settings["hop_length"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        examples: list[tuple[str, np.ndarray, np.ndarray]] = []
        chosen: dict[str, str] = {}
        for cid in sorted(candidates):
            name = class_names[cid] if cid < len(class_names) else str(cid)
            for path in candidates[cid]:
                try:
                    y = load_audio(path, sr=sr)  # == librosa.load(path, sr=sr)[0]
                except Exception as exc:  # an unreadable clip: try the class's next one
                    log.warning("cannot draw %s (%s); trying the next clip of %s", path, exc, name)
                    continue
                mfcc = librosa.feature.mfcc(
                    y=y,
                    sr=sr,
                    n_mfcc=int(settings["n_mfcc"]),
                    n_fft=int(settings["n_fft"]),
                    hop_length=hop,
                    n_mels=int(settings["n_mels"]),
                    fmin=float(settings["fmin"]),
                    fmax=settings["fmax"],
                )
                title = f"{name} ({Path(path).name})"
                fig = class_example_figure(y, mfcc, sr=sr, hop_length=hop, title=title)
                save_figure(fig, tmp / f"class_{cid}_{_slug(name)}.png", tight=False)
                examples.append((name, y, mfcc))
                chosen[name] = path
                break
        if not examples:
            log.warning("no clip of %s could be decoded; no class example figures", dataset)
            return
        overview = _overview_figure(examples, sr=sr, hop_length=hop)
        save_figure(overview, tmp / "classes_overview.png", tight=False)
        (tmp / "done.json").write_text(
            json.dumps({"dataset": dataset, "settings": dict(settings), "clips": chosen}, indent=1)
        )
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first (the target is a non-empty dir)
            if not (out / "done.json").is_file():
                raise
        log.info("class example figures for %s written to %s", dataset, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Per sweep


def sweep_history_figure(
    numbers: Sequence[int],
    values: Sequence[float],
    *,
    direction: str = "maximize",
    leaky: Sequence[bool] | None = None,
    title: str = "Optimisation history",
) -> Figure:
    """Objective of each finished trial in order, with the best so far as a step line.

    Trials flagged in ``leaky`` (random-split protocol) are drawn in red and left out of the
    best-so-far line.
    """
    nums = np.asarray(numbers)
    vals = np.asarray(values, dtype=float)
    flags = np.zeros(len(nums), bool) if leaky is None else np.asarray(leaky, bool)
    order = np.argsort(nums, kind="stable")
    nums, vals, flags = nums[order], vals[order], flags[order]
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ok = ~flags
    ax.scatter(nums[ok], vals[ok], color=CV_COLOR, s=18, label="trial (fold CV)")
    if flags.any():
        ax.scatter(
            nums[flags],
            vals[flags],
            color=LEAKY_COLOR,
            marker="x",
            s=24,
            label="trial (random split, LEAKY)",
        )
    if ok.any():
        acc = np.maximum.accumulate if direction == "maximize" else np.minimum.accumulate
        ax.step(
            nums[ok], acc(vals[ok]), where="post", color="black", linewidth=1.2, label="best so far"
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (mean CV accuracy)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def param_importance_figure(
    importances: Mapping[str, float], *, title: str = "Parameter importances (fANOVA)"
) -> Figure:
    """Horizontal bars of each parameter's importance, largest on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(6, 0.9 + 0.35 * max(len(items), 1)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color=CV_COLOR)
    ax.set_xlabel("importance")
    ax.set_title(title, fontsize=10)
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
