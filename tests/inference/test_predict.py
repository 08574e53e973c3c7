"""`python -m urbansound.predict`: the training code's features, the trainer's probabilities,
windows and timelines of long recordings, bad files skipped, files / folders / globs."""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import cli_env, fit_settings
from urbansound.inference.cli import expand_inputs
from urbansound.inference.modelfile import load_model
from urbansound.inference.predict import (
    AGREEMENT_TOLERANCE,
    FilePrediction,
    Window,
    predict_files,
    timeline,
    window_bounds,
)


@pytest.fixture(scope="module")
def fitted(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A model fitted on every clip of the demo corpus (in process)."""
    from urbansound.experiment.fit import fit_model

    tmp = tmp_path_factory.mktemp("fitted")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("URBANSOUND8K", raising=False)
        mp.chdir(tmp)
        return fit_model(fit_settings(demo_dir, tmp / "cache"), run_dir=tmp / "fit", progress=False)


def run_predict(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "urbansound.predict", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_predicting_the_training_clips_gives_the_trainers_probabilities(fitted) -> None:
    model = load_model(fitted.model_path)
    assert fitted.summary["evaluation"]["on"] == "training data"
    preds = predict_files(model, fitted.test_paths)
    assert [p.path for p in preds] == fitted.test_paths
    assert all(len(p.windows) == 1 for p in preds)  # every training clip is one window
    got = np.stack([p.windows[0].probabilities for p in preds])
    # the same clips in the same order: bitwise the trainer's in-memory probabilities
    np.testing.assert_array_equal(got, fitted.probabilities)
    # and the same through the command line (CSV: the shortest text of each float32)
    proc = run_predict(str(fitted.model_path), *fitted.test_paths, cwd=fitted.model_path.parent)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    names = model.class_names
    assert [r["path"] for r in rows] == fitted.test_paths
    cli = np.array([[np.float32(r[n]) for n in names] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(cli, fitted.probabilities)
    assert [r["class"] for r in rows] == [names[i] for i in fitted.probabilities.argmax(1)]


def test_a_clip_alone_agrees_with_its_batch_within_the_stated_tolerance(fitted) -> None:
    # Not the same computation (a product of one row takes another kernel than one of many):
    # docs/fit-predict.md promises agreement within AGREEMENT_TOLERANCE, not bitwise.
    model = load_model(fitted.model_path)
    paths = fitted.test_paths[:40]
    batch = np.stack([p.windows[0].probabilities for p in predict_files(model, paths)])
    np.testing.assert_array_equal(batch, fitted.probabilities[:40])  # a sub-batch: its bits
    alone = np.stack([predict_files(model, [p])[0].windows[0].probabilities for p in paths])
    np.testing.assert_allclose(alone, batch, rtol=0, atol=AGREEMENT_TOLERANCE)
    top2 = np.sort(batch, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * AGREEMENT_TOLERANCE
    assert (alone.argmax(1) == batch.argmax(1))[clear].all()


def _concatenated_recording(fitted, dest: Path, *, classes: int = 5, per_class: int = 3):
    """60 s: ``per_class`` 4-second training clips of each of ``classes`` classes, in blocks.

    Clips are decoded by the pipeline (22 050 Hz) and chosen among those the model classifies
    right with a margin, so each 4 s window is exactly a training clip's audio.
    """
    from urbansound.features.audio import load_audio

    model = load_model(fitted.model_path)
    sr = model.features.sr
    probs, y = fitted.probabilities, fitted.y_true
    top2 = np.sort(probs, axis=1)[:, -2:]
    confident = (probs.argmax(1) == y) & (top2[:, 1] - top2[:, 0] > 0.1)
    picked: list[int] = []
    order: list[int] = []
    for c in range(len(model.class_names)):
        rows = [
            i
            for i in np.flatnonzero(confident & (y == c))
            if len(load_audio(fitted.test_paths[i], sr=sr)) == 4 * sr
        ]
        if len(rows) >= per_class:
            picked += rows[:per_class]
            order.append(c)
        if len(order) == classes:
            break
    assert len(order) == classes, "the fitted model should know enough clips well"
    audio = np.concatenate([load_audio(fitted.test_paths[i], sr=sr) for i in picked])
    assert len(audio) == 60 * sr
    sf.write(dest, audio, sr, subtype="FLOAT")
    return order


def test_a_long_recording_gets_windows_and_a_timeline_that_finds_its_classes(
    fitted, tmp_path: Path
) -> None:
    long_file = tmp_path / "street.wav"
    order = _concatenated_recording(fitted, long_file)
    model = load_model(fitted.model_path)
    names = model.class_names
    (pred,) = predict_files(model, [str(long_file)])
    assert pred.duration == pytest.approx(60.0)
    assert [(w.start, w.end) for w in pred.windows] == [(4.0 * i, 4.0 * i + 4) for i in range(15)]
    assert [(s.start, s.end, s.label, s.windows) for s in pred.timeline] == [
        (12.0 * k, 12.0 * k + 12, c, 3) for k, c in enumerate(order)
    ]

    # the command line: CSV timeline; and JSON with windows and timeline
    proc = run_predict(str(fitted.model_path), str(long_file), "--timeline", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(r["start"], r["end"], r["class"]) for r in rows] == [
        (str(12 * k), str(12 * k + 12), names[c]) for k, c in enumerate(order)
    ]
    out = tmp_path / "out.json"
    proc = run_predict(
        str(fitted.model_path), str(long_file), "--format", "json", "-o", str(out), "--hop", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    doc = json.loads(out.read_text())
    (f,) = doc["files"]
    # hop 2 s: windows start every 2 s until one reaches the end (28 windows of 4 s)
    assert [w["start"] for w in f["windows"]] == [2.0 * i for i in range(29)]
    assert f["windows"][-1]["end"] == 60.0 and f["windows"][-2]["end"] == 58.0
    # windows that hold one clip exactly (even starts) keep its class
    for w in f["windows"][0:29:2]:
        assert w["class"] == names[order[int(w["start"]) // 12]]
    segs = f["timeline"]
    assert segs[0]["start"] == 0 and segs[-1]["end"] == 60.0
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(segs))
    # the blocks' classes appear in the timeline in their order (windows across two clips of
    # one block hold that class's sounds only, but are no training clip)
    found = iter(s["class"] for s in segs)
    assert all(names[c] in found for c in order)


def test_window_bounds_cover_the_recording_and_the_last_window_holds_the_rest() -> None:
    assert window_bounds(80, window=100, hop=100) == [(0, 80)]
    assert window_bounds(250, window=100, hop=100) == [(0, 100), (100, 200), (200, 250)]
    assert window_bounds(250, window=100, hop=50) == [(0, 100), (50, 150), (100, 200), (150, 250)]
    assert window_bounds(200, window=100, hop=100) == [(0, 100), (100, 200)]


def test_timeline_merges_consecutive_windows_of_one_class() -> None:
    def w(start: float, label: int, p: float) -> Window:
        probs = np.full(3, (1 - p) / 2, dtype=np.float32)
        probs[label] = p
        return Window(start, start + 4, label, probs)

    wins = [w(0, 1, 0.6), w(2, 1, 0.8), w(4, 0, 0.5), w(6, 1, 0.9), w(8, 1, 0.7)]
    segs = timeline(wins, duration=11.0)
    assert [(s.start, s.end, s.label, s.windows) for s in segs] == [
        (0, 4, 1, 2),
        (4, 6, 0, 1),
        (6, 12, 1, 2),
    ]
    assert segs[0].probability == pytest.approx(0.7)
    assert FilePrediction("x", 3.0, [w(0, 2, 1.0)]).path == "x"


def test_files_folders_and_globs_are_expanded_in_order(tmp_path: Path) -> None:
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/2.wav", "a/1.flac", "a/sub/3.wav", "a/notes.txt", "b.wav", "c.ogg"):
        (tmp_path / name).write_bytes(b"")
    paths, problems = expand_inputs(
        [
            str(tmp_path / "a"),
            str(tmp_path / "*.wav"),
            str(tmp_path / "a" / "2.wav"),  # a repeat
            str(tmp_path / "nothing*.wav"),
            str(tmp_path / "missing.wav"),  # named: refused before anything is read
        ]
    )
    rel = [str(Path(p).relative_to(tmp_path)) for p in paths]
    assert rel == ["a/1.flac", "a/2.wav", "a/sub/3.wav", "b.wav"]
    assert problems == [
        (str(tmp_path / "nothing*.wav"), "no file matches this pattern"),
        (str(tmp_path / "missing.wav"), "no such file"),
    ]


def test_a_bad_file_is_skipped_with_one_line_and_the_batch_goes_on(
    fitted, demo_root: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    folder = demo_root / "audio" / "fold2"
    n_fold2 = len(list(folder.glob("*.wav")))
    proc = run_predict(
        str(fitted.model_path),
        str(bad),
        str(folder),
        str(demo_root / "audio" / "fold3" / "*.wav"),
        str(tmp_path / "none*.wav"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    n_fold3 = len(list((demo_root / "audio" / "fold3").glob("*.wav")))
    assert len(rows) == n_fold2 + n_fold3
    assert rows[0]["path"].startswith(str(folder))
    lines = proc.stderr.splitlines()
    (about_bad,) = [ln for ln in lines if str(bad) in ln]
    assert about_bad.startswith(f"skipped: cannot decode audio file {bad}: ")
    assert any("none*.wav" in ln and "no file matches" in ln for ln in lines)
    assert "Traceback" not in proc.stderr

    # nothing to classify: exit 2; a bad model file: exit 2, one line
    proc = run_predict(str(fitted.model_path), str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    proc = run_predict(str(bad), str(folder), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {bad} is not a model file")
    proc = run_predict(str(fitted.model_path), str(folder), "--hop", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--hop" in proc.stderr


def test_a_model_from_other_feature_versions_warns(fitted, tmp_path: Path) -> None:
    from urbansound.inference.modelfile import FeatureVersionWarning, save_model

    model = load_model(fitted.model_path)
    meta = {k: v for k, v in model.metadata.items() if k not in ("format", "members")}
    meta["features"] = dict(meta["features"])
    stage = dict(meta["features"]["stage"])
    stage["libraries"] = dict(stage["libraries"], librosa="0.9.0")
    meta["features"]["stage"] = stage
    old = save_model(tmp_path / "old.safetensors", model.members, meta)
    with pytest.warns(FeatureVersionWarning, match=r"librosa 0\.9\.0 \(model\) vs "):
        load_model(old)
    with pytest.warns(FeatureVersionWarning):
        reloaded = load_model(old)
    assert reloaded.metadata["features"]["stage"]["libraries"]["librosa"] == "0.9.0"
    proc = run_predict(str(old), fitted.test_paths[0], cwd=tmp_path)
    assert proc.returncode == 0
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warned) == 1 and "librosa 0.9.0 (model)" in warned[0]
    # the model's own versions: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureVersionWarning)
        load_model(fitted.model_path)


def test_a_hop_longer_than_the_window_leaves_gaps_and_no_window_starts_past_the_end() -> None:
    # a 10 s recording, 4 s windows every 12 s: one window, not a second from 12 s to 10 s
    assert window_bounds(1000, window=400, hop=1200) == [(0, 400)]
    assert window_bounds(1000, window=400, hop=700) == [(0, 400), (700, 1000)]
    with pytest.raises(ValueError, match="at least one sample"):
        window_bounds(1000, window=400, hop=0)


def test_a_hop_shorter_than_one_feature_frame_is_refused_in_one_line(
    fitted, tmp_path: Path
) -> None:
    # --hop 1e-9 gave one window per sample: a 10 s file never finished
    from urbansound.inference.predict import min_hop

    model = load_model(fitted.model_path)
    assert min_hop(model) == model.features.hop_length / model.features.sr
    with pytest.raises(ValueError, match="the hop must be at least"):
        predict_files(model, fitted.test_paths[:1], hop_s=1e-9)
    proc = run_predict(str(fitted.model_path), fitted.test_paths[0], "--hop", "1e-9", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: --hop must be at least one feature frame")
    assert proc.stderr.count("\n") == 1


def _model_file_with(src: Path, dest: Path, change) -> Path:
    """``src`` with its urbansound metadata (a dict, or its JSON text returned by ``change``)
    and its tensors passed through ``change``, and the checksum recomputed (as someone editing
    the file would): what the range checks behind the checksum see."""
    from safetensors.numpy import load, save

    from urbansound.inference.validation import content_digest

    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])["__metadata__"]
    meta = json.loads(header["urbansound"])
    tensors = load(raw)
    got = change(meta, tensors)
    text = got if isinstance(got, str) else json.dumps(meta)
    digest = content_digest(text, tensors)
    dest.write_bytes(save(tensors, metadata={**header, "urbansound": text, "sha256": digest}))
    return dest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m, t: m.update(format_version="two"), r"model format version 'two' is not one"),
        (lambda m, t: m.update(format_version=None), r"model format version None is not one"),
        (lambda m, t: m.update(format_version=2), r"has model format version 2; .*upgrade"),
        (lambda m, t: "{not json", r"metadata is not a JSON object"),
        (lambda m, t: m.pop("class_names"), r"class_names must list 2 to 10000"),
        (lambda m, t: m.update(class_names=["a", "b"]), r"member 0 gives 10 outputs for 2 cl"),
        (lambda m, t: m.update(window_s=0), r"window_s must be a number of seconds from one"),
        (lambda m, t: m.update(members=[]), r"it lists no members"),
        (lambda m, t: m["features"].update(n_features=7), r"give 13 features, .* says 7"),
        (lambda m, t: m["features"]["settings"].update(n_mfcc="many"), r"feature settings are"),
        (lambda m, t: m["features"].pop("settings"), r"it has no features\.settings"),
        (lambda m, t: m["members"][0].update(n_layers="x"), r"member 0 has n_layers 'x'"),
        (lambda m, t: m["members"][0].update(activation="swish"), r"activation 'swish'"),
        (lambda m, t: t.pop("m0.bias1"), r"tensor m0\.bias1 is missing"),
        (lambda m, t: t.update({"m0.kernel0": t["m0.kernel0"][:5]}), r"do not take 13 inputs"),
        (lambda m, t: t.update({"m0.mean": t["m0.mean"][:3]}), r"standardiser's mean is not 13"),
    ],
)
def test_a_damaged_model_file_is_one_line_naming_it_not_a_traceback_or_nan(
    fitted, tmp_path: Path, change, message: str
) -> None:
    # a metadata value of another type or a missing key gave a KeyError/ValueError traceback,
    # and a model file without members gave NaN probabilities and exit 0
    from urbansound.inference.modelfile import ModelFileError

    bad = _model_file_with(fitted.model_path, tmp_path / "bad.safetensors", change)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(bad, check_versions=False)
    assert str(info.value).startswith(str(bad)) and "\n" not in str(info.value)


def test_a_damaged_model_file_on_the_command_line_is_exit_2_and_one_line(
    fitted, tmp_path: Path
) -> None:
    bad = _model_file_with(fitted.model_path, tmp_path / "bad.safetensors",
                           lambda m, t: m.update(members=[]))  # fmt: skip
    proc = run_predict(str(bad), fitted.test_paths[0], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {bad}: it lists no members")
    assert proc.stderr.count("\n") == 1


def test_ctrl_c_during_predict_is_one_line_exit_130_and_writes_nothing(
    fitted, tmp_path: Path
) -> None:
    import signal

    from urbansound.features.audio import load_audio

    # a long recording (many windows with a short hop) and an empty file, which a worker refuses
    # at once: once predict has said it skipped the empty file it is classifying, and Ctrl-C
    # comes while the other worker is in the long recording
    sr = load_model(fitted.model_path).features.sr
    clip = load_audio(fitted.test_paths[0], sr=sr)
    sf.write(tmp_path / "long.wav", np.tile(clip, 120), sr)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    out = tmp_path / "out" / "predictions.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "urbansound.predict", str(fitted.model_path), str(empty),
         str(tmp_path / "long.wav"), "--hop", "0.05", "--jobs", "2", "-o", str(out)],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        seen = []
        for line in proc.stderr:  # ends at EOF if predict exits first (then the asserts say so)
            seen.append(line)
            if line.startswith("skipped"):
                break
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
        stderr = "".join(seen) + proc.stderr.read()  # read on the same buffered stream
        stdout = proc.stdout.read()
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted; no predictions were written"
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_an_output_that_is_the_model_or_an_input_is_refused_and_both_stay(
    fitted, tmp_path: Path
) -> None:
    # -o over the audio or the model replaced it with the CSV text
    audio = tmp_path / "clip.wav"
    audio.write_bytes(Path(fitted.test_paths[0]).read_bytes())
    model = tmp_path / "m.safetensors"
    model.write_bytes(fitted.model_path.read_bytes())
    for output, what in [
        (str(tmp_path / "." / "clip.wav"), f"the audio file {audio}"),
        (str(model), "the model file"),
    ]:
        before = (audio.read_bytes(), model.read_bytes())
        proc = run_predict(str(model), str(tmp_path), "-o", output, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr == f"error: --output {output} is {what}; it would be overwritten: " \
            "choose another file\n"  # fmt: skip
        assert (audio.read_bytes(), model.read_bytes()) == before


def test_a_file_too_long_to_resample_is_skipped_not_a_crash_of_the_batch(
    fitted, tmp_path: Path
) -> None:
    # 100 000 samples declared at 1 Hz resample to 2.2e9 samples at 22 050 Hz: soxr crashed the
    # whole process (segmentation fault)
    odd = tmp_path / "one_hertz.wav"
    sf.write(odd, np.full(100_000, 0.1, dtype=np.float32), 1)
    proc = run_predict(str(fitted.model_path), str(odd), fitted.test_paths[0], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["path"] for r in rows] == [fitted.test_paths[0]]
    (line,) = [ln for ln in proc.stderr.splitlines() if str(odd) in ln]
    assert line.startswith(f"skipped: cannot decode audio file {odd}: it is too long to decode")
    assert "split it into shorter files" in line


def test_a_nan_file_is_named_and_skipped_or_with_on_error_stop_ends_the_call(
    fitted, tmp_path: Path
) -> None:
    y = np.full(22050, 0.1, dtype=np.float32)
    y[2205] = np.nan
    nan = tmp_path / "nan file ü.wav"
    sf.write(nan, y, 22050, subtype="FLOAT")
    good = fitted.test_paths[0]
    out = tmp_path / "p.csv"
    proc = run_predict(str(fitted.model_path), str(nan), good, "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["path"] for r in csv.DictReader(out.open())] == [good]
    (line,) = [ln for ln in proc.stderr.splitlines() if str(nan) in ln]
    assert line.startswith(f"skipped: cannot decode audio file {nan}: 1 audio samples are not fin")
    out.unlink()
    proc = run_predict(str(fitted.model_path), str(nan), good, "-o", str(out), "--on-error",
                       "stop", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and not out.exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot decode audio file {nan}: ")
    assert last.endswith("(--on-error stop; nothing written)")


def test_an_output_ending_in_json_is_json_unless_format_says_otherwise(
    fitted, tmp_path: Path
) -> None:
    # -o predictions.json wrote CSV text into a .json file
    clip = fitted.test_paths[0]
    out = tmp_path / "predictions.json"
    assert run_predict(str(fitted.model_path), clip, "-o", str(out), cwd=tmp_path).returncode == 0
    assert [f["path"] for f in json.loads(out.read_text())["files"]] == [clip]
    proc = run_predict(str(fitted.model_path), clip, "-o", str(out), "--format", "csv",
                       cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and out.read_text().startswith("path,start,end,class,")
