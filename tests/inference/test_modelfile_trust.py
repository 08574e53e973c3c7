"""Integrity of model files: the checksum, the metadata's ranges, finite weights, well-formed
trees, and a model path that is no regular file; each failure one line naming the file."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import cli_env
from tests.inference.models import metadata, mlp_member, rewrite, sklearn_member, write_model
from urbansound.inference.modelfile import (
    ModelFileError,
    UnverifiedModelWarning,
    load_model,
    save_model,
)


def _predict(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "urbansound.predict", *args],
        cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    import soundfile as sf

    path = tmp_path / "clip.wav"
    t = np.arange(22050 * 2) / 22050
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    return path


# --------------------------------------------------------------------------------------------
# The checksum


def _data_offset(path: Path) -> int:
    raw = path.read_bytes()
    return 8 + int.from_bytes(raw[:8], "little")


def test_one_flipped_weight_byte_is_found_by_the_checksum(tmp_path: Path, clip: Path) -> None:
    good = write_model(tmp_path / "good.safetensors")
    ref = load_model(good).predict_proba(np.ones((1, 13), np.float32))
    raw = bytearray(good.read_bytes())
    raw[_data_offset(good) + 100] ^= 0x01  # one bit of one weight (or standardiser value)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError) as info:
        load_model(bad)
    assert str(info.value).startswith(f"{bad}: its contents do not match its SHA-256 checksum")
    proc = _predict(str(bad), str(clip), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {bad}: its contents do not match its SHA-256")
    assert ref.shape == (1, 10)


def test_an_edited_metadata_value_is_found_by_the_checksum(tmp_path: Path) -> None:
    good = write_model(tmp_path / "good.safetensors")
    raw = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw.replace(b"class3", b"class9", 1))  # same length: still safetensors
    with pytest.raises(ModelFileError, match="do not match its SHA-256 checksum"):
        load_model(bad)


def test_a_file_of_an_earlier_version_without_checksum_loads_with_one_warning(
    tmp_path: Path, clip: Path
) -> None:
    good = write_model(tmp_path / "good.safetensors")
    old = rewrite(good, tmp_path / "old.safetensors", lambda m, t: None, checksum="drop")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(old)
    assert [type(w.message) for w in caught] == [UnverifiedModelWarning]
    assert "holds no checksum" in str(caught[0].message) and str(old) in str(caught[0].message)
    X = np.ones((2, 13), np.float32)
    np.testing.assert_array_equal(model.predict_proba(X), load_model(good).predict_proba(X))
    proc = _predict(str(old), str(clip), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "holds no checksum" in warned[0]


# --------------------------------------------------------------------------------------------
# Values in range (the checksum recomputed: what an edited or hand-made file gives)


def _nan_weight(m: dict, t: dict) -> None:
    t["m0.kernel1"][3, 4] = np.nan


def _zero_std(m: dict, t: dict) -> None:
    t["m0.std"][5] = 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_nan_weight, r"member 0 layer 1: its weights are not all finite"),
        (lambda m, t: t["m0.bias0"].__setitem__(0, np.inf), r"weights are not all finite"),
        (_zero_std, r"member 0: its standardiser's std is 0\.0 for feature 5"),
        (lambda m, t: t["m0.std"].__setitem__(0, -1.0), r"std is -1\.0 for feature 0"),
        (lambda m, t: t["m0.mean"].__setitem__(2, np.nan), r"standardiser's mean is not 13 fin"),
        (lambda m, t: m.update(window_s=1e-9), r"window_s must be a number of seconds from one"),
        (lambda m, t: m.update(window_s=1e9), r"window_s .* to 3600, got 1000000000\.0"),
        (lambda m, t: m.update(window_s=float("nan")), r"window_s must be .*, got nan"),
        (lambda m, t: m.update(window_s=True), r"window_s must be .*, got True"),
        (lambda m, t: m["class_names"].__setitem__(1, "a\nb"), r"class_names must list 2 to"),
        (lambda m, t: m["class_names"].__setitem__(1, ""), r"class_names must list"),
        (lambda m, t: m["class_names"].__setitem__(1, "x" * 201), r"of 1 to 200 characters"),
        (lambda m, t: m["members"][0].update(seed=-1), r"member 0 has seed -1"),
        (lambda m, t: m["members"][0].update(seed=2**40), r"member 0 has seed 1099511627776"),
        (lambda m, t: m["members"][0].update(family="xgboost"), r"member 0 has family 'xgboost'"),
        (lambda m, t: m["members"][0].update(n_layers=10**6), r"member 0 has n_layers 1000000"),
        (lambda m, t: m["members"][0].update(standardize="yes"), r"has standardize 'yes'"),
        (lambda m, t: m["features"].update(n_features=-3), r"features\.n_features must be an int"),
        (lambda m, t: m["features"]["settings"].update(hop_length=0), r"feature settings are inv"),
        (lambda m, t: m["train"].update(seeds=[-5]), r"train\.seeds must list seeds"),
        (lambda m, t: m["training_data"].update(n_clips=-1), r"training_data\.n_clips must be a"),
        (lambda m, t: m["evaluation"].update(accuracy=1.5), r"evaluation\.accuracy must lie in"),
        (lambda m, t: t.update({"m0.extra": np.zeros(3, np.float32)}), r"m0\.extra belongs to no"),
    ],
)
def test_a_value_out_of_range_is_one_line_naming_the_file_and_the_value(
    tmp_path: Path, change: Any, message: str
) -> None:
    good = write_model(tmp_path / "good.safetensors")
    bad = rewrite(good, tmp_path / "bad.safetensors", change)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(bad, check_versions=False)
    assert str(info.value).startswith(f"{bad}: ") and "\n" not in str(info.value)


def test_nan_weights_and_a_tiny_window_are_one_error_line_on_the_command_line(
    tmp_path: Path, clip: Path
) -> None:
    """Before: rows of NaN labelled as the first class (exit 0), and a ValueError traceback."""
    good = write_model(tmp_path / "good.safetensors")
    for name, change, words in [
        ("nan", _nan_weight, "its weights are not all finite"),
        ("std0", _zero_std, "std is 0.0 for feature 5"),
        ("window", lambda m, t: m.update(window_s=1e-9), "window_s must be a number of seconds"),
    ]:
        bad = rewrite(good, tmp_path / f"{name}.safetensors", change)
        proc = _predict(str(bad), str(clip), cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith(f"error: {bad}: ") and words in proc.stderr
        assert proc.stderr.count("\n") == 1


def test_probabilities_that_overflow_are_an_error_not_a_row_of_nan(tmp_path: Path) -> None:
    member = mlp_member()
    member.params[0] = (np.full_like(member.params[0][0], 3e38), member.params[0][1])
    path = save_model(tmp_path / "huge.safetensors", [member], metadata())
    model = load_model(path)  # finite weights: the file is well formed
    with pytest.raises(ModelFileError, match=rf"^{path}: the model gives probabilities that are"):
        model.predict_proba(np.full((3, 13), 100.0, np.float32))


# --------------------------------------------------------------------------------------------
# A scikit-learn member's fitted structure (its compiled code follows these indices unchecked)


def _forest(change: Any) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    member = sklearn_member(RandomForestClassifier(n_estimators=3, random_state=0), "random_forest")
    change(member.estimator[-1].estimators_[1].tree_)
    return member


def _boosting(change: Any) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    member = sklearn_member(HistGradientBoostingClassifier(max_iter=3), "hist_gb")
    change(member.estimator[-1]._predictors[1][2].nodes)
    return member


def _neighbours(change: Any) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    member = sklearn_member(KNeighborsClassifier(algorithm="kd_tree"), "knn")
    change(member.estimator[-1]._tree.get_arrays()[1])
    return member


def _first_split(nodes: np.ndarray) -> int:
    return int(np.flatnonzero(~nodes["is_leaf"].astype(bool))[0])


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            lambda: _forest(lambda t: t.children_left.__setitem__(0, 10**8)),
            "points outside or back",
        ),
        (lambda: _forest(lambda t: t.children_left.__setitem__(0, 0)), "points outside or back"),
        (lambda: _forest(lambda t: t.feature.__setitem__(0, 99)), "splits on a feature outside"),
        (
            lambda: _boosting(lambda n: n["left"].__setitem__(_first_split(n), 10**6)),
            "boosting tree's child index points outside",
        ),
        (
            lambda: _boosting(lambda n: n["right"].__setitem__(_first_split(n), _first_split(n))),
            "boosting tree's child index points outside or back",
        ),
        (lambda: _neighbours(lambda idx: idx.__setitem__(0, 10**6)), "points outside its samples"),
    ],
    ids=[
        "tree-outside",
        "tree-loop",
        "tree-feature",
        "boosting-outside",
        "boosting-loop",
        "kdtree",
    ],
)
def test_a_tree_that_would_crash_or_never_end_is_refused_on_loading(
    tmp_path: Path, member: Any, message: str
) -> None:
    """A child index past the node array crashed predict (segfault); one pointing back to its
    node made it loop forever. Written by skops itself from the altered estimator."""
    path = save_model(tmp_path / "m.safetensors", [member()], metadata())
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(path, check_versions=False)
    assert str(info.value).startswith(f"{path}: member 0 (")


def test_an_svm_whose_support_vector_counts_disagree_is_refused(tmp_path: Path) -> None:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    member = sklearn_member(CalibratedClassifierCV(SVC(), ensemble=False), "svm")  # as model=svm
    svc = member.estimator[-1].calibrated_classifiers_[0].estimator
    svc._n_support[0] += 5  # libsvm would read past the support vectors
    path = save_model(tmp_path / "m.safetensors", [member], metadata())
    with pytest.raises(ModelFileError, match="support vectors disagree with its per-class counts"):
        load_model(path, check_versions=False)


# --------------------------------------------------------------------------------------------
# A model path that is no regular file: refused unopened, never a hang


def _kinds(where: Path) -> list[tuple[Path, str]]:
    """Model paths that are no regular file, and what the refusal says of each."""
    where.mkdir(exist_ok=True)
    fifo = where / "fifo.safetensors"
    os.mkfifo(fifo)
    link_to_fifo = where / "to-fifo.safetensors"
    link_to_fifo.symlink_to(fifo)
    broken = where / "broken.safetensors"
    broken.symlink_to(where / "gone.safetensors")
    folder = where / "run"
    folder.mkdir()
    return [
        (fifo, "a FIFO (named pipe), not a regular file"),
        (link_to_fifo, "a FIFO (named pipe), not a regular file"),
        (broken, "a broken symbolic link (to"),
        (Path("/dev/zero"), "a character device, not a regular file"),
        (folder, "is a directory without a model.safetensors"),
    ]


def test_a_model_path_that_is_no_regular_file_is_refused_without_opening_it(
    tmp_path: Path, clip: Path
) -> None:
    """A FIFO without a writer hung predict; /dev/zero was read until memory ran out."""
    sock_path = tmp_path / "s.safetensors"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        cases = [*_kinds(tmp_path / "api"), (sock_path, "a socket, not a regular file")]
        for path, words in cases:
            with pytest.raises(ModelFileError) as info:
                load_model(path)
            message = str(info.value)
            assert str(path) in message and words in message and "\n" not in message
    finally:
        sock.close()
    for path, words in _kinds(tmp_path / "cli"):  # one line each, and no hang
        proc = _predict(str(path), str(clip), cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("error: ") and words in proc.stderr
        assert proc.stderr.count("\n") == 1
    assert stat.S_ISFIFO(os.stat(tmp_path / "cli" / "fifo.safetensors").st_mode)


def test_a_scikit_learn_member_breaking_the_output_contract_is_an_error_not_nan(
    tmp_path: Path,
) -> None:
    member = sklearn_member(family="logreg")
    member.estimator[-1].coef_[0, 0] = np.nan  # trusted types, a damaged value
    path = save_model(tmp_path / "m.safetensors", [member], metadata())
    model = load_model(path, check_versions=False)
    with pytest.raises(ModelFileError) as info:
        model.predict_proba(np.ones((3, 13), np.float32))
    assert str(info.value).startswith(f"{path}: member logreg: predict_proba gave ")
    assert "NaN or infinite" in str(info.value) and "\n" not in str(info.value)
