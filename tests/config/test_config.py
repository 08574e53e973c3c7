"""Config composition and validation: every bad value is one error line naming its key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from tests.helpers import CONF_DIR, REPO, SWEEP_DIR
from urbansound.config.checks import settings_from_config
from urbansound.config.schema import (
    FEATURE_SCHEMAS,
    GROUP_SCHEMAS,
    MODEL_SCHEMAS,
    config_error,
    schema_nodes,
)
from urbansound.config.settings import FAMILIES, Settings, TrackingSettings
from urbansound.errors import ConfigError


def settings(compose_cfg, overrides: list[str]) -> Settings:
    """Settings as the entry point gets them: Hydra's composition errors become ConfigError."""
    try:
        cfg = compose_cfg(overrides)
    except ConfigCompositionException as exc:
        raise config_error(exc) from None
    return settings_from_config(cfg)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m urbansound.run ARGS`` as a user starts it (no HYDRA_FULL_ERROR, no Comet)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMET_", "HYDRA_"))}
    return subprocess.run(
        [sys.executable, "-m", "urbansound.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_defaults_compose_to_the_tutorial_setup(compose_cfg) -> None:
    cfg = compose_cfg()
    for group in ("data", "features", "model", "train", "cv", "tracking"):
        assert group in cfg, group
    s = settings_from_config(cfg)
    assert isinstance(s, Settings)
    assert s.features.n_mfcc == 40
    assert s.features.kind == "mfcc" and s.features.pooling == "mean"
    assert (s.features.sr, s.features.n_fft, s.features.hop_length) == (22050, 2048, 512)
    assert s.model.hidden == (256, 256) and s.model.dropout == 0.5
    assert (s.train.epochs, s.train.batch_size, s.train.lr, s.train.eps) == (100, 32, 1e-3, 1e-7)
    assert s.cv.name == "folds" and s.cv.folds is None
    assert s.tracking == TrackingSettings()  # project_name, workspace, offline_dir: Comet's own
    assert s.tracking.project_name is None and s.tracking.offline_dir is None
    assert s.trial.number is None
    assert s.progress == "auto"


def test_top_level_n_mfcc_override_reaches_features(compose_cfg) -> None:
    s = settings_from_config(compose_cfg(["n_mfcc=20"]))
    assert s.features.n_mfcc == 20


def test_output_dirs_follow_the_documented_layout(compose_cfg) -> None:
    from omegaconf import OmegaConf

    hydra_cfg = compose_cfg(return_hydra_config=True).hydra
    assert OmegaConf.to_container(hydra_cfg.run)["dir"].startswith("outputs/runs/${now:")
    sweep = OmegaConf.to_container(hydra_cfg.sweep)
    assert sweep["dir"].startswith("outputs/multirun/${now:")
    assert sweep["subdir"] == "${hydra.job.num}"


def test_tutorial_train_preset_turns_standardisation_off(compose_cfg) -> None:
    s = settings_from_config(compose_cfg(["train=tutorial"]))
    assert s.train.standardize is False
    assert s.train.epochs == 100


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["n_mfcc=200"], "n_mfcc (200) must be <= features.n_mels (128)"),
        (["features.hop_length=4096"], "features.hop_length (4096) must be <= features.n_fft"),
        (["features.pooling=maximum"], "features.pooling must be one of mean, mean_std, stats"),
        (["train.device=tpu"], "train.device must be one of auto, cpu, cuda; got 'tpu'"),
        (["train.epochs=-1"], "train.epochs must be an integer >= 1, got -1"),
        (["train.epochs=0"], "train.epochs must be an integer >= 1, got 0"),
        (["train.epochs=many"], "train.epochs must be an integer, got 'many'"),
        (["train.batch_size=3.5"], "train.batch_size must be an integer, got 3.5"),
        (["train.standardize=maybe"], "train.standardize must be true or false, got 'maybe'"),
        (["train.threads=x"], "train.threads must be an integer or null, got 'x'"),
        (["features.fmax=high"], "features.fmax must be a number or null, got 'high'"),
        (["model.hidden=[256,x]"], "model.hidden[1] must be an integer, got 'x'"),
        (["cv.outer_fold=11"], "cv.outer_fold must be a fold between 1 and 10 or null, got 11"),
        (["progress=fancy"], "progress must be one of auto, bar, log, none; got 'fancy'"),
        (["train.batch_size=0"], "train.batch_size must be an integer >= 1, got 0"),
        (["train.lr=0"], "train.lr must be > 0.0, got 0.0"),
        (["model.dropout=1.5"], "model.dropout must be <= 0.99, got 1.5"),
        (["model.hidden=[256,-3]"], "model.hidden[1] must be an integer >= 1, got -3"),
        (["model.activation=swish"], "model.activation must be one of relu, gelu, tanh, elu"),
        (["data.missing=ignore"], "data.missing must be one of error, skip; got 'ignore'"),
        (["features.deltas=3"], "features.deltas must be 0, 1 or 2, got 3"),
        (["features.fmax=20000"], "features.fmax (20000.0) must be <= sr/2 (11025.0) or null"),
        (["features.n_jobs=0"], "features.n_jobs must be a positive count or -1"),
        (["tracking.mode=cloud"], "tracking.mode must be one of auto, online, offline, disabled"),
        (["cv.folds=[1,11]"], "cv.folds must list folds between 1 and 10, got [1, 11]"),
        (["cv.folds=[]"], "cv.folds must list at least one fold between 1 and 10, or be null"),
        (["cv.folds=[1,1,2]"], "cv.folds lists fold(s) [1] more than once, got [1, 1, 2]"),
        (
            ["cv.folds=[1,2]", "cv.outer_fold=2"],
            "cv.outer_fold (2) is held out of the search, so cv.folds ([1, 2]) cannot test on it",
        ),
        # values so large that they overflowed, exhausted memory or crashed the resampler
        (
            ["train.epochs=99999999999999999999"],
            "train.epochs must be an integer between 1 and 2147483647, got 99999999999999999999",
        ),
        (["train.seed=4294967296"], "train.seed must be an integer between 0 and 4294967295"),
        (["cv=random_split", "cv.seed=2**40"], "cv.seed must be an integer, got '2**40'"),
        (["cv.seed=1099511627776"], "cv.seed must be an integer between 0 and 4294967295"),
        (["features.sr=1000000000"], "features.sr must be an integer between 1000 and 768000"),
        (["features.n_fft=1073741824"], "features.n_fft must be an integer between 16 and 65536"),
        (
            ["data.demo_clips_per_class=100000000"],
            "data.demo_clips_per_class must be an integer between 1 and 1000",
        ),
        (
            ["model=random_forest", "model.n_estimators=99999999999999999999"],
            "model.n_estimators must be an integer between 1 and 2147483647",
        ),
        (["features.n_jobs=99999999999999999999"], "features.n_jobs must be a positive count"),
        # more mel bands than the FFT has bins (or bins between their edges): constant features
        (
            ["features.n_mels=2000"],
            "features.n_mels (2000) leaves mel bands without any FFT bin at features.sr=22050, "
            "features.n_fft=2048, fmin 0 Hz, fmax 11025 Hz (those features would be constant): "
            "use features.n_mels <= 620, or raise features.n_fft",
        ),
        (["features.n_mels=100000000"], "features.n_mels (100000000) leaves mel bands without"),
        (["features.cache_dir=''"], "features.cache_dir must name a folder"),
        (
            ["trial.number=3"],
            "trial.study_name, trial.storage and trial.number are set together by the urbansound "
            "sweeper; leave them unset (got study_name=None, storage=None, number=3)",
        ),
        (["features.cache_dir=' '"], "features.cache_dir must name a folder"),
        (
            ["features.n_fft=256", "features.hop_length=128"],
            "features.n_mels (128) leaves mel bands without any FFT bin",
        ),
        (
            ["features.fmin=10500", "features.n_mels=128"],
            "features.n_mels (128) leaves mel bands without any FFT bin",
        ),
    ],
)
def test_each_invalid_value_names_its_key(compose_cfg, overrides, message) -> None:
    with pytest.raises(ConfigError) as info:
        settings(compose_cfg, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_logmel_features_may_have_more_coefficients_than_mels(compose_cfg) -> None:
    # n_mfcc only constrains MFCC features; log-mel features ignore it.
    s = settings_from_config(compose_cfg(["features.kind=logmel", "n_mfcc=200"]))
    assert s.features.kind == "logmel"


def test_cli_reports_a_bad_value_as_one_line_without_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "urbansound.run", "train.epochs=-5", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: train.epochs must be an integer >= 1, got -5" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# ---------------------------------------------------------------------------------------------
# Unknown keys: rejected by the schemas, with the close match


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # the instance: a typo written with the `+` Hydra's own message suggests
        (["+train.epoch=3"], "unknown key train.epoch; did you mean train.epochs?"),
        (["train.epoch=3"], "unknown key train.epoch; did you mean train.epochs?"),
        (["+features.n_mel=64"], "unknown key features.n_mel; did you mean features.n_mels?"),
        (["+model.hiden=[8]"], "unknown key model.hiden; did you mean model.hidden?"),
        (["+cv.fold=3"], "unknown key cv.fold; did you mean cv.folds?"),
        (["+data.rot=/x"], "unknown key data.rot; did you mean data.root?"),
        (["+tracking.mod=auto"], "unknown key tracking.mod; did you mean tracking.mode?"),
        (["+trial.numbr=1"], "unknown key trial.numbr; did you mean trial.number?"),
        (["+n_mfc=20"], "unknown key n_mfc; did you mean n_mfcc?"),
        (["+progres=log"], "unknown key progres; did you mean progress?"),
        (["+train.zzz=1"], "unknown key train.zzz; train has epochs, batch_size, lr,"),
    ],
)
def test_unknown_keys_are_rejected_naming_the_close_match(compose_cfg, overrides, message):
    with pytest.raises(ConfigError) as info:
        settings(compose_cfg, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def _group_options() -> list[tuple[str, str]]:
    return [
        (group.name, option.stem)
        for group in sorted(
            p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("__pycache__", "sweep")
        )
        for option in sorted(group.glob("*.yaml"))
    ]


@pytest.mark.parametrize(("group", "option"), _group_options())
def test_every_group_file_is_typed_by_its_schema(compose_cfg, group, option) -> None:
    """Each option of each group rejects an unknown key and converts values by type."""
    assert group in GROUP_SCHEMAS, f"conf/{group}/ has no schema in urbansound.config.schema"
    s = settings_from_config(compose_cfg([f"{group}={option}"]))
    assert isinstance(s, Settings)
    if (group, option) == ("model", "sklearn"):  # open: every other key is a constructor kwarg
        s = settings_from_config(compose_cfg(["model=sklearn", "model.no_such_key=1"]))
        assert s.model.params == {"no_such_key": 1}
        return
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg([f"{group}={option}", f"{group}.no_such_key=1"])
    assert str(config_error(info.value)).startswith(f"unknown key {group}.no_such_key")
    # its values are typed: a number given as text fails at composition, naming the key
    words = {int: "an integer", float: "a number", bool: "true or false"}
    schemas = {"model": MODEL_SCHEMAS, "features": FEATURE_SCHEMAS}
    schema = schemas[group][option] if group in schemas else GROUP_SCHEMAS[group]
    field, tp = next((f, t) for f, t in schema.__annotations__.items() if t in words)
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg([f"{group}={option}", f"{group}.{field}=text"])
    assert str(config_error(info.value)) == f"{group}.{field} must be {words[tp]}, got 'text'"


def test_a_runs_config_yaml_is_checked_the_same_way(compose_cfg) -> None:
    """The report rebuilds settings from a run's resolved config.yaml (a plain dict)."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(compose_cfg(["n_mfcc=20"]), resolve=True)
    assert settings_from_config(resolved) == settings_from_config(compose_cfg(["n_mfcc=20"]))
    resolved["hydra"] = {"anything": 1}  # ignored
    assert settings_from_config(resolved).features.n_mfcc == 20
    resolved["train"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"^unknown key train.epoch; did you mean train.epochs"):
        settings_from_config(resolved)
    # missing keys take the schema's defaults (an older config.yaml without `progress`)
    assert settings_from_config({"train": {"epochs": 5}}).train.epochs == 5


def test_sweep_group_composes_from_the_sweeps_folder(compose_cfg) -> None:
    cfg = compose_cfg(["sweep=full_tpe"], return_hydra_config=True)
    assert cfg.hydra.sweeper.study_name == "full_tpe"
    assert cfg.hydra.runtime.choices["hydra/sweeper/sampler"] == "tpe"
    assert cfg.hydra.runtime.choices["hydra/sweeper/pruner"] == "median"
    assert cfg.hydra.sweeper.params["train.lr"] == "tag(log, interval(1e-4, 1e-2))"
    # the group's options are the folder's files, each a study of its own name
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    names = sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert GlobalHydra.instance().config_loader().get_group_options("sweep") == names
    for name in names:
        cfg = compose_cfg([f"sweep={name}"], return_hydra_config=True)
        assert cfg.hydra.sweeper.study_name == name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["+train.epoch=3"], "error: unknown key train.epoch; did you mean train.epochs?"),
        (["train.epoch=3"], "error: unknown key train.epoch; did you mean train.epochs?"),
        (["train.epochs=many"], "error: train.epochs must be an integer, got 'many'"),
        (["features=mfc"], "Could not find 'features/mfc'"),
    ],
)
def test_cli_reports_unknown_keys_and_types_as_one_line(tmp_path, args, message) -> None:
    proc = cli(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr  # one line
    assert message in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()  # nothing ran


# -- model families (issue 13) ----------------------------------------------------------------


def test_every_family_has_its_group_file_and_schema(compose_cfg) -> None:
    assert sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")) == sorted(FAMILIES)
    for family in FAMILIES:
        cfg = compose_cfg([f"model={family}"])
        assert cfg.model.family == family
        assert settings_from_config(cfg).model.family == family
    assert settings_from_config(compose_cfg()).model.family == "mlp"  # the default


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=svm"], {"C": 10.0, "kernel": "rbf", "gamma": "scale"}),
        (["model=svm", "model.gamma=0.01", "model.C=2"], {"C": 2.0, "gamma": 0.01}),
        (["model=random_forest"], {"n_estimators": 500, "max_features": "sqrt", "stages": 10}),
        (["model=extra_trees", "model.max_features=0.5"], {"max_features": 0.5}),
        (["model=hist_gb"], {"max_iter": 200, "learning_rate": 0.1, "early_stopping": False}),
        (["model=logreg", "model.C=0.5"], {"C": 0.5, "max_iter": 1000}),
        (["model=knn", "model.n_neighbors=9"], {"n_neighbors": 9, "weights": "uniform"}),
        (
            ["model=sklearn", "model._target_=sklearn.svm.LinearSVC", "+model.tol=0.01"],
            {"target": "sklearn.svm.LinearSVC", "params": {"tol": 0.01}},
        ),
        # a number written without a point is a number too (was "must be a number or a string")
        (["model=svm", "model.gamma=1"], {"gamma": 1.0}),
        (["model=random_forest", "model.max_features=1"], {"max_features": 1.0}),
        (["model=random_forest", "model.max_features=log2"], {"max_features": "log2"}),
    ],
)
def test_family_keys_compose_typed(compose_cfg, overrides, expected) -> None:
    model = settings(compose_cfg, overrides).model
    assert {k: getattr(model, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=svm", "model.c=1"], "unknown key model.c; did you mean model.C?"),
        (["model=svm", "+model.gama=1"], "unknown key model.gama; did you mean model.gamma?"),
        (["model=svm", "model.C=big"], "model.C must be a number, got 'big'"),
        (["model=svm", "model.C=0"], "model.C must be > 0.0, got 0.0"),
        (["model=svm", "model.gamma=wide"], "model.gamma must be one of scale, auto or a number"),
        (["model=svm", "model.kernel=rbff"], "model.kernel must be one of rbf, linear, poly"),
        (
            ["model=random_forest", "model.n_estimator=9"],
            "unknown key model.n_estimator; did you mean model.n_estimators?",
        ),
        (["model=random_forest", "model.max_features=2.0"], "model.max_features must be <= 1.0"),
        (["model=random_forest", "model.max_depth=deep"], "model.max_depth must be an integer"),
        (["model=random_forest", "model.n_jobs=0"], "model.n_jobs must be a positive count"),
        (["model=hist_gb", "model.stages=0"], "model.stages must be an integer >= 1, got 0"),
        (["model=knn", "model.weights=near"], "model.weights must be one of uniform, distance"),
        (["model=mlp", "model.C=1"], "unknown key model.C; model has hidden, dropout"),
        (["model=sklearn", "model._target_=null"], "model=sklearn needs model._target_"),
        (["model.family=forest"], "model.family must be one of mlp, svm, logreg"),
        (["model=svm", "model.gamma=-1"], "model.gamma must be > 0.0, got -1.0"),
        (["model=svm", "model.gamma=[1]"], "model.gamma must be one of scale, auto or a number"),
        (["model=svm", "model.gamma=true"], "model.gamma must be one of scale, auto or a number"),
        (["model=extra_trees", "model.max_features=0"], "model.max_features must be > 0.0"),
    ],
)
def test_family_errors_are_one_line_naming_the_key(compose_cfg, overrides, message) -> None:
    with pytest.raises(ConfigError) as info:
        settings(compose_cfg, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_config_yaml_without_family_is_the_mlp() -> None:
    """A run directory from before the families has no model.family: it is read as the MLP."""
    s = settings_from_config({"model": {"hidden": [8], "dropout": 0.0, "activation": "relu"}})
    assert s.model.family == "mlp" and s.model.hidden == (8,)
    s = settings_from_config({"model": {"family": "knn", "n_neighbors": 3}})
    assert s.model.n_neighbors == 3 and s.model.p == 2


@pytest.mark.parametrize(
    ("sr", "n_fft", "fmin", "fmax"),
    [(22050, 2048, 0.0, 11025.0), (16000, 512, 20.0, 8000.0), (44100, 256, 300.0, 11025.0)],
)
def test_empty_mel_bands_are_found_exactly_where_librosa_warns(sr, n_fft, fmin, fmax) -> None:
    """The config check refuses exactly the filterbanks librosa warns about ("Empty filters")."""
    import warnings

    import librosa

    from urbansound.config.melscale import empty_mel_bands

    for n_mels in (16, 40, 64, 128, 200, 400, 620, 621, 1000):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        librosa_warns = any("Empty filters" in str(w.message) for w in caught)
        assert (empty_mel_bands(sr, n_fft, n_mels, fmin, fmax) > 0) == librosa_warns, n_mels


def test_the_largest_valid_values_pass(compose_cfg) -> None:
    s = settings(
        compose_cfg,
        [
            "features.n_mels=620",
            "train.seed=4294967295",
            "cv.seed=4294967295",
            "data.demo_clips_per_class=1000",
            "features.sr=768000",
            "features.n_fft=65536",
            "train.batch_size=100000",
            "cv.folds=[3,1]",
            "cv.outer_fold=2",
        ],
    )
    assert s.features.n_mels == 620 and s.train.seed == 2**32 - 1 and s.cv.folds == (3, 1)


def test_the_config_tree_extends_the_schemas_stored_under_their_names() -> None:
    """Each ``/<name>_schema@_here_`` of a group file is a node of schema_nodes, in the store."""
    import re

    from hydra.core.config_store import ConfigStore

    nodes = schema_nodes()
    extended = {
        name
        for path in CONF_DIR.rglob("*.yaml")
        for name in re.findall(r"^\s*- /(\w+_schema)@_here_", path.read_text(), re.MULTILINE)
    }
    assert {"train_schema", "model_schema", "model_svm_schema"} <= extended <= set(nodes)
    stored = {name.removesuffix(".yaml") for name in ConfigStore.instance().list("")}
    assert set(nodes) <= stored
    assert nodes["model_svm_schema"] is MODEL_SCHEMAS["svm"]
    assert nodes["train_schema"] is GROUP_SCHEMAS["train"]


def test_a_bad_config_is_refused_without_loading_the_feature_stage() -> None:
    """The checks stand on the bottom layer: the mel-band check imports neither features nor
    librosa (whose import through numba costs most of a second), nor torch or Hydra's runtime."""
    code = (
        "import sys\n"
        "from urbansound.config.checks import settings_from_config\n"
        "from urbansound.errors import ConfigError\n"
        "try:\n"
        "    settings_from_config({'features': {'n_mels': 2000}})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "heavy = ('librosa', 'numba', 'torch', 'urbansound.features', 'hydra.core.hydra_config')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    message, loaded = out.stdout.splitlines()
    assert message.startswith("features.n_mels (2000) leaves mel bands without any FFT bin")
    assert loaded == "[]"


SECRET = "Sup3r-S3cret"


@pytest.mark.parametrize(
    ("module", "args"),
    [
        # a single run: Hydra ignores the sweeper's keys but writes them into .hydra/hydra.yaml
        ("urbansound.run", [f"hydra.sweeper.storage=postgresql://u:{SECRET}@db/optuna"]),
        ("urbansound.run", [f"trial.storage=postgresql://u:{SECRET}@db/optuna"]),
        ("urbansound.run", ["-m", f"hydra.sweeper.storage=sqlite:///o.db?password={SECRET}"]),
        ("urbansound.fit", [f"fit.from=postgresql+psycopg://u:{SECRET}@db:5432/optuna"]),
        ("urbansound.fit", [f"+extra=mysql://u:{SECRET}@db/x"]),  # any key
    ],
    ids=["run-sweeper-key", "run-trial-storage", "sweep-query-password", "fit-from", "any-key"],
)
def test_a_url_password_on_the_command_line_is_refused_before_anything_is_written(
    tmp_path: Path, module: str, args: list[str]
) -> None:
    """Hydra writes every override into .hydra/ and its log before a task or sweeper sees it:
    a password there is refused first, for any command and key, with the password hidden."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMET_", "HYDRA_"))}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "tracking.mode=disabled"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    key = args[-1].split("=", 1)[0].lstrip("+")
    assert line.startswith(f"error: {key}=") and "***" in line
    assert "PGPASSWORD" in line and "storage_password_env" in line
    assert SECRET not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no .hydra/


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////tmp/a:b@c/optuna.db",  # ':' and '@' in a folder name are no password
        "postgresql://user@dbhost/optuna?sslmode=require&application_name=sweep",
        "sqlite:///a%20b.db",
    ],
)
def test_a_url_without_a_password_passes_the_command_line_check(url: str) -> None:
    from urbansound.config.app import refuse_url_passwords

    refuse_url_passwords([f"hydra.sweeper.storage={url}", f"fit.from={url}", "n_mfcc=20"])
