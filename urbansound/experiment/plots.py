"""Matplotlib figures: per run, per dataset, per sweep.

Every ``*_figure`` function returns a :class:`matplotlib.figure.Figure` built without pyplot (no
global figure state, no GUI backend, safe in worker processes); :func:`save_figure` writes one
atomically and closes nothing that the caller still holds. The tracking module logs the same
figures to Comet; :mod:`urbansound.report` saves PNG copies of some in the sweep report (its
sweep-level figures live in :mod:`urbansound.report.figures`).

Per run, :func:`write_run_figures` writes ``figures/confusion_matrix.png`` (summed over the test
folds) and ``figures/epoch_curves.png`` into the run directory. Per dataset,
:func:`dataset_figures` draws what the tutorial showed for one clip of each class (a waveform and
a log-mel spectrogram in dB), once per dataset and stage settings: the PNGs and one WAV per class
are cached under a key of the chosen clips and the stage settings (in
``<features.cache_dir>/figures``: :func:`dataset_figures_cache`), and linked into a run or sweep
directory after the run (``urbansound.run``'s Hydra callback), off the run's critical path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from urbansound.config.settings import FeatureSettings
from urbansound.training.metrics import summed_confusion
from urbansound.training.results import EpochMetrics, RunResult
from urbansound.utils.files import atomic_open, output_error, public_mode, write_json

log = logging.getLogger(__name__)

__all__ = [
    "DatasetFigures",
    "class_example_figure",
    "confusion_matrix_figure",
    "dataset_figure_key",
    "dataset_figures",
    "dataset_figures_cache",
    "epoch_curves_figure",
    "link_or_copy",
    "per_class_accuracy_figure",
    "save_figure",
    "write_run_figures",
]

FIGURES_DIR = "figures"
CV_COLOR = "#1f77b4"


def save_figure(
    fig: Figure, path: str | Path, *, dpi: int = 110, tight: bool | None = None
) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (:func:`urbansound.utils.files.atomic_open`).

    ``tight`` crops to the drawn content (``bbox_inches="tight"``, one extra draw); by default
    only for figures without a layout engine (constrained layout already fits them).
    """
    if tight is None:
        tight = fig.get_layout_engine() is None
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, dpi=dpi, format="png", bbox_inches="tight" if tight else None)
    return Path(path)


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


def epoch_curves_figure(
    history: Sequence[EpochMetrics | Mapping[str, Any]], *, title: str = ""
) -> Figure:
    """Per-epoch curves of a cross-validated run: losses (mean over folds) and test accuracy.

    ``history`` is a run's :attr:`~urbansound.training.results.RunResult.epochs`, or
    ``results.json``'s list of epochs (``epoch``, ``train_loss[]``, ``test_loss[]``,
    ``test_accuracy[]``): one thin line per fold and the mean in bold.
    """
    if not history:
        raise ValueError("history is empty")
    rows = [h.to_dict() if isinstance(h, EpochMetrics) else h for h in history]
    epochs = np.array([h["epoch"] for h in rows])
    acc = np.array([h["test_accuracy"] for h in rows], dtype=float)  # (epochs, folds)
    trl = np.array([h["train_loss"] for h in rows], dtype=float)
    tel = np.array([h["test_loss"] for h in rows], dtype=float)
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
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def write_run_figures(
    run_dir: str | Path, result: RunResult, *, class_names: Sequence[str] | None = None
) -> list[Path]:
    """Write a run's own figures into ``run_dir/figures``.

    ``confusion_matrix.png`` (summed over the test folds) and ``epoch_curves.png``; a figure
    whose data is absent (a pruned run has no confusion matrix) is skipped. Returns the paths
    written.
    """
    out = Path(run_dir) / FIGURES_DIR
    names = list(class_names or result.class_names)
    title = f"{result.dataset} · {_protocol_label(result.protocol, leaky=result.leaky)}"
    written: list[Path] = []
    folds = result.cv.folds if result.cv is not None else []
    if names and any(f.confusion for f in folds):
        cm = summed_confusion(folds)
        fig = confusion_matrix_figure(cm, names, title=f"{title} · summed over test folds")
        written.append(save_figure(fig, out / "confusion_matrix.png"))
    if result.epochs:
        fig = epoch_curves_figure(result.epochs, title=title)
        written.append(save_figure(fig, out / "epoch_curves.png"))
    return written


def dataset_figure_key(features: FeatureSettings) -> dict[str, Any]:
    """The settings the dataset figures depend on: the stage (log-mel) settings only.

    Not ``n_mfcc``, ``lifter``, ``deltas``, ``pooling`` or anything of the model, so a sweep over
    those draws the figures once.
    """
    return {
        "sr": features.sr,
        "n_fft": features.n_fft,
        "hop_length": features.hop_length,
        "win_length": features.win_length,
        "window": features.window,
        "n_mels": features.n_mels,
        "fmin": float(features.fmin),
        "fmax": features.fmax,
        "top_db": features.top_db,
    }


def _protocol_label(protocol: str, *, leaky: bool) -> str:
    protocol = protocol or "folds"
    leaky = leaky or protocol.startswith("random_split")
    return f"{protocol} (LEAKY)" if leaky and "LEAKY" not in protocol else protocol


# ---------------------------------------------------------------------------------------------
# Per dataset (what the tutorial showed for one clip per class: waveform and spectrogram)


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
    ax.set_xlim(0, max(n, 1) / sr)
    ax.set_xlabel("time (s)")


def _melspec(ax: Any, s_db: np.ndarray, features: FeatureSettings) -> Any:
    """The log-mel spectrogram (dB) on a mel-spaced frequency axis labelled in Hz."""
    import librosa.display

    img = librosa.display.specshow(
        s_db,
        sr=features.sr,
        hop_length=features.hop_length,
        x_axis="time",
        y_axis="mel",
        fmin=features.fmin,
        fmax=features.fmax if features.fmax is not None else features.sr / 2,
        ax=ax,
        cmap="magma",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    return img


def _log_mel_db(y: np.ndarray, features: FeatureSettings) -> np.ndarray:
    """``librosa.power_to_db(melspectrogram(y), ref=np.max, top_db=features.top_db)``."""
    from urbansound.features.dsp import log_mel

    s_db = log_mel(y, features)  # power_to_db with ref=1.0, top_db=None
    s_db = s_db - s_db.max()
    if features.top_db is not None:
        s_db = np.maximum(s_db, -float(features.top_db))
    return s_db


def class_example_figure(
    y: np.ndarray, s_db: np.ndarray, *, features: FeatureSettings, title: str
) -> Figure:
    """One clip: its waveform above its log-mel spectrogram in dB (colour bar, Hz, seconds)."""
    fig = Figure(figsize=(7, 5.0), layout="constrained")
    ax_wave, ax_spec = fig.subplots(2, 1, sharex=True)
    _waveform(ax_wave, y, sr=features.sr)
    ax_wave.set_ylabel("amplitude")
    ax_wave.set_xlabel("")
    img = _melspec(ax_spec, s_db, features)
    fig.colorbar(img, ax=ax_spec, format="%+2.0f dB", label="dB re clip peak")
    fig.suptitle(f"{title}: waveform and log-mel spectrogram", fontsize=10)
    return fig


def _overview_figure(
    examples: Sequence[tuple[str, np.ndarray, np.ndarray]], *, features: FeatureSettings
) -> Figure:
    fig = Figure(figsize=(12, 0.6 + 1.6 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), 2, squeeze=False)
    img = None
    for row, (name, y, s_db) in zip(axes, examples, strict=True):
        _waveform(row[0], y, sr=features.sr)
        row[0].set_ylabel(_wrap(name, width=16), fontsize=9)
        img = _melspec(row[1], s_db, features)
        row[1].set_ylabel("Hz", fontsize=8)
        if row is not axes[-1]:
            row[0].set_xlabel("")
            row[1].set_xlabel("")
    axes[0][0].set_title("waveform")
    axes[0][1].set_title("log-mel spectrogram (dB)")
    if img is not None:
        fig.colorbar(img, ax=axes[:, 1].tolist(), format="%+2.0f dB", label="dB re clip peak")
    return fig


def _wrap(text: str, *, width: int = 24, lines: int = 3) -> str:
    """A long label on a few short lines (cut with an ellipsis past ``lines``)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width=width, max_lines=lines, placeholder=" …")) or text


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_") or "class"


@dataclass
class DatasetFigures:
    """The per-dataset figures and audio samples (in the cache, or linked into ``dest``).

    ``figures`` maps a name (``classes_overview``, ``class_<id>_<class>``) to its PNG;
    ``samples`` lists ``(class name, WAV)``: one clip per class decoded at ``features.sr``
    (16-bit PCM). Both empty when no clip could be decoded.
    """

    directory: Path
    figures: dict[str, Path] = field(default_factory=dict)
    samples: list[tuple[str, Path]] = field(default_factory=list)


def dataset_figures_cache(features: FeatureSettings) -> Path:
    """Where :func:`dataset_figures` caches its entries: ``<features.cache_dir>/figures``.

    Inside the cache directory the user chose, beside the feature cache's ``logmel/`` and
    ``features/``: never its parent (``features.cache_dir=/data/cache`` must not write
    ``/data/figures``).
    """
    return Path(features.cache_dir).expanduser() / "figures"


def dataset_figures(
    clips: Any,
    *,
    class_names: Sequence[str],
    dataset: str,
    features: FeatureSettings,
    cache_dir: str | Path,
    dest: str | Path | None = None,
) -> DatasetFigures:
    """The waveform and log-mel spectrogram of one clip per class, and that clip as WAV; drawn
    once per dataset and stage settings (:func:`dataset_figure_key`).

    The first decodable clip of each class (in the metadata's order) is drawn, as the tutorial
    did with ``librosa.load``. The files (``class_<id>_<class>.png`` and ``.wav`` per class,
    ``classes_overview.png`` with all classes) are cached in ``cache_dir/<dataset>-<key>/``, the
    key covering the chosen clips (path, size, mtime) and the stage settings; with ``dest`` they
    are also hard-linked there (copied where linking is impossible).

    Parameters
    ----------
    clips:
        The dataset index's ``clips`` DataFrame (columns ``path``, ``classID``).
    class_names:
        Class names by classID.

    Raises
    ------
    OutputError
        The cache or ``dest`` cannot be written.
    """
    import librosa

    settings = {**dataset_figure_key(features), "librosa": librosa.__version__, "version": 2}
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
    blob = json.dumps([dataset, settings, ident], sort_keys=True).encode()
    out = Path(cache_dir) / f"{_slug(dataset)}-{hashlib.sha1(blob).hexdigest()[:12]}"
    try:
        if not (out / "done.json").is_file():
            _draw_dataset_figures(
                candidates, out, class_names=class_names, features=features, dataset=dataset
            )
        else:
            log.debug("class example figures cached in %s", out)
        result = DatasetFigures(directory=out)
        if not (out / "done.json").is_file():
            return result
        done = json.loads((out / "done.json").read_text())
        target = Path(dest) if dest is not None else out
        for png in sorted(out.glob("*.png")):
            where = link_or_copy(png, target / png.name) if dest is not None else png
            result.figures[png.stem] = where
        for name, wav in done.get("samples", []):
            src = out / wav
            result.samples.append((name, link_or_copy(src, target / wav) if dest else src))
        if dest is not None:
            result.directory = target
        return result
    except OSError as exc:
        raise output_error(getattr(exc, "filename", None) or out, exc) from exc


def _draw_dataset_figures(
    candidates: Mapping[int, Sequence[str]],
    out: Path,
    *,
    class_names: Sequence[str],
    features: FeatureSettings,
    dataset: str,
) -> None:
    import soundfile

    from urbansound.features.audio import load_audio

    sr = features.sr
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    public_mode(tmp, directory=True)  # the figure cache is shared like the feature cache
    try:
        examples: list[tuple[str, np.ndarray, np.ndarray]] = []
        chosen: dict[str, str] = {}
        samples: list[tuple[str, str]] = []
        for cid in sorted(candidates):
            name = class_names[cid] if cid < len(class_names) else str(cid)
            for path in candidates[cid]:
                try:
                    y = load_audio(path, sr=sr)  # == librosa.load(path, sr=sr)[0]
                except Exception as exc:  # an unreadable clip: try the class's next one
                    log.warning("cannot draw %s (%s); trying the next clip of %s", path, exc, name)
                    continue
                s_db = _log_mel_db(y, features)
                stem = f"class_{cid}_{_slug(name)}"
                title = f"{name} ({Path(path).name})"
                fig = class_example_figure(y, s_db, features=features, title=title)
                save_figure(fig, tmp / f"{stem}.png")
                soundfile.write(tmp / f"{stem}.wav", y, sr, subtype="PCM_16")
                examples.append((name, y, s_db))
                chosen[name] = path
                samples.append((name, f"{stem}.wav"))
                break
        if not examples:
            log.warning("no clip of %s could be decoded; no class example figures", dataset)
            return
        save_figure(_overview_figure(examples, features=features), tmp / "classes_overview.png")
        info = {"dataset": dataset, "settings": dataset_figure_key(features), "clips": chosen}
        write_json(tmp / "done.json", {**info, "samples": samples})
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first (the target is a non-empty dir)
            if not (out / "done.json").is_file():
                raise
        log.info("class example figures for %s written to %s", dataset, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
