"""Search spaces: Hydra's override grammar -> Optuna distributions, grids, values, study names."""

from __future__ import annotations

import re

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from urbansound.config.overrides import format_value, parse
from urbansound.errors import ConfigError
from urbansound.sweep.settings import derive_seed, sweep_settings
from urbansound.sweep.space import build_search_space, derive_study_name, parse_param
from urbansound.sweep.storage import dashboard_command, normalize_storage
from urbansound.sweep.urls import display_storage


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("n_mfcc=20,40,60", CategoricalDistribution([20, 40, 60])),
        ("n_mfcc=choice(20,40,60)", CategoricalDistribution([20, 40, 60])),
        ("x=choice(relu,gelu)", CategoricalDistribution(["relu", "gelu"])),
        ("x=a,null,true,1.5", CategoricalDistribution(["a", None, True, 1.5])),
        ("x=choice(20)", CategoricalDistribution([20])),
        # range excludes stop, for every sampler: 10, 20, 30, 40
        ("x=range(10,50,10)", IntDistribution(10, 40, step=10)),
        ("x=range(10,41,10)", IntDistribution(10, 40, step=10)),
        ("x=range(5)", IntDistribution(0, 4)),
        ("x=range(10,0,-2)", IntDistribution(2, 10, step=2)),
        ("x=range(0.1,0.5,0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("x=range(3,4)", CategoricalDistribution([3])),
        ("x=shuffle(range(1,4))", CategoricalDistribution([1, 2, 3])),
        ("x=float(range(1,4))", FloatDistribution(1.0, 3.0, step=1.0)),
        ("x=tag(log,range(1,8))", IntDistribution(1, 7, log=True)),
        ("x=interval(0,1)", FloatDistribution(0.0, 1.0)),
        ("x=int(interval(1,10))", IntDistribution(1, 10)),
        ("x=tag(log,interval(1e-4,1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("x=tag(log,int(interval(16,512)))", IntDistribution(16, 512, log=True)),
        ("+extra=1,2", CategoricalDistribution([1, 2])),
    ],
)
def test_override_becomes_distribution(override: str, expected) -> None:
    param = parse_param(override)
    assert param is not None
    assert param.distribution == expected
    assert param.name == override.split("=", 1)[0].lstrip("+")
    assert param.raw is False


def test_list_choices_are_passed_as_override_text() -> None:
    param = parse_param("model.hidden=choice([256,256],[512, 256])")
    assert param is not None and param.raw
    assert param.distribution == CategoricalDistribution(["[256,256]", "[512,256]"])
    assert param.override("[512,256]") == "model.hidden=[512,256]"


@pytest.mark.parametrize("override", ["x=5", "x=[1,2]", "x=null", "~x", "x='a,b'"])
def test_single_values_are_not_swept(override: str) -> None:
    assert parse_param(override) is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("x=range(1,10,-1)", "no values"),
        ("x=range(1,1)", "no values"),
        ("x=tag(log,interval(0,1))", "above 0"),
        ("x=tag(log,range(0.1,1,0.1))", "integers with step 1"),
        ("x=tag(log,choice(1,2))", "interval or a range"),
        ("x=tag(logg,interval(1,2))", "unknown tag"),
        ("x=choice(1,1)", "listed twice"),
        ("x=interval(2,1)", "low < high"),
        ("x=choice(", "cannot parse"),
    ],
)
def test_bad_sweeps_name_the_override(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_param(override)
    assert override.split("=")[0] in str(err.value) or "cannot parse" in str(err.value)


@pytest.mark.parametrize(
    ("override", "grid"),
    [
        ("x=20,40,60", [20, 40, 60]),
        ("x=range(10,50,10)", [10, 20, 30, 40]),
        ("x=range(0.1,0.5,0.1)", [0.1, 0.2, 0.3, 0.4]),
        ("x=int(interval(1,4))", [1, 2, 3, 4]),
        ("x=tag(log,range(1,4))", [1, 2, 3]),
    ],
)
def test_grid_values_match_the_search_distribution(override: str, grid: list) -> None:
    param = parse_param(override)
    assert param is not None
    values = param.grid_values()
    assert values == grid
    assert all(param.distribution._contains(param.distribution.to_internal_repr(v)) for v in values)


def test_continuous_key_cannot_be_a_grid() -> None:
    space = build_search_space({"lr": "interval(0.1,1)"}, ["n=1,2"])
    assert not space.is_discrete()
    with pytest.raises(ConfigError, match="sweep key lr: a grid needs discrete values"):
        space.grid()


def test_command_line_overrides_params_and_fixed_values_pass_through() -> None:
    space = build_search_space(
        {"n_mfcc": "choice(13,20)", "model.dropout": "interval(0.1,0.5)", "train.epochs": 7},
        ["n_mfcc=20,40,60", "tracking.mode=disabled", "model.dropout=0.3", "sweep=mfcc_grid"],
    )
    assert set(space.params) == {"n_mfcc"}
    assert space.params["n_mfcc"].distribution == CategoricalDistribution([20, 40, 60])
    assert space.fixed == (
        "train.epochs=7",
        "tracking.mode=disabled",
        "model.dropout=0.3",
        "sweep=mfcc_grid",
    )
    assert space.grid_size() == 3
    assert space.overrides({"n_mfcc": 40}) == [*space.fixed, "n_mfcc=40"]
    assert space.grid() == {"n_mfcc": [20, 40, 60]}


def test_params_must_be_override_strings() -> None:
    with pytest.raises(ConfigError, match=r"hydra.sweeper.params.x must be an override string"):
        build_search_space({"x": [1, 2]})


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -3,
        1e-5,
        0.1,
        float("inf"),
        "relu",
        "a b",
        "20",
        "true",
        "null",
        "x,y",
        "it's",
        "a=b",
        "[1]",
        "sqlite:////tmp/o.db",
        "postgresql+psycopg://u:p@localhost:5432/db?sslmode=disable",
        "C:\\dir",
    ],
)
def test_values_are_written_so_that_hydra_parses_them_back(value) -> None:
    text = format_value(value)
    override = parse(f"k={text}")
    assert not override.is_sweep_override()
    parsed = override.value()
    assert parsed == value and type(parsed) is type(value)


def test_study_name_is_stable_and_ignores_operational_overrides() -> None:
    space = build_search_space(None, ["n_mfcc=20,40,60"])
    a = derive_study_name(space, ["n_mfcc=20,40,60", "tracking.mode=disabled"])
    b = derive_study_name(space, ["features.cache_dir=/x", "n_mfcc=20,40,60"])
    c = derive_study_name(space, ["n_mfcc=20,40,60", "train.epochs=5"])
    assert a == b and a.startswith("n_mfcc-") and len(a) == len("n_mfcc-") + 8
    assert c != a
    other = build_search_space(None, ["n_mfcc=20,40"])
    assert derive_study_name(other, ["n_mfcc=20,40"]) != a
    assert derive_study_name(space, ["hydra.sweeper.n_jobs=4", "n_mfcc=20,40,60"]) == a
    changed = derive_study_name(space, ["hydra.sweeper.params.n_mfcc=13"])
    assert changed != derive_study_name(space, [])
    # the sampler and pruner are part of a study's identity
    tpe = derive_study_name(space, [], identity={"sampler": {"_target_": "tpe"}})
    rnd = derive_study_name(space, [], identity={"sampler": {"_target_": "random"}})
    assert tpe != rnd and tpe.startswith("n_mfcc-")


def test_seeds_derive_per_worker_and_resume() -> None:
    assert derive_seed(7, worker=0, n_existing=0) == 7
    seeds = {derive_seed(7, worker=w, n_existing=n) for w in range(3) for n in (0, 5, 10)}
    assert len(seeds) == 9
    assert derive_seed(7, worker=1, n_existing=5) == derive_seed(7, worker=1, n_existing=5)


def test_storage_paths_become_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_storage("sqlite:///outputs/optuna.db") == (
        f"sqlite:///{tmp_path}/outputs/optuna.db"
    )
    assert (tmp_path / "outputs").is_dir()
    assert normalize_storage("journal/o.log") == str(tmp_path / "journal" / "o.log")
    assert normalize_storage("postgresql://u@db/x").startswith("postgresql+psycopg")
    assert display_storage("postgresql+psycopg://u:pw@db/x") == ("postgresql+psycopg://u:***@db/x")
    assert dashboard_command("/a b/o.log") == "optuna-dashboard '/a b/o.log'"
    assert dashboard_command("postgresql+psycopg://u@db:5432/x") == (
        "optuna-dashboard postgresql+psycopg://u@db:5432/x"
    )
    # the password's variable by name: the shell puts its value in, nothing writes it
    assert dashboard_command("postgresql+psycopg://u@db:5432/x", "DB_PASSWORD") == (
        'PGPASSWORD="$DB_PASSWORD" optuna-dashboard postgresql+psycopg://u@db:5432/x'
    )
    with pytest.raises(ConfigError, match="in-memory SQLite"):
        normalize_storage("sqlite://")


def test_a_storage_that_cannot_be_a_file_is_one_line_naming_it(tmp_path) -> None:
    from urbansound.sweep.storage import open_storage

    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder,\nnor a journal\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = {
        f"sqlite:///{a_file}/optuna.db": f"{a_file} is a file, not a folder",
        f"{a_file}/journal.log": f"{a_file} is a file, not a folder",
        "sqlite:////proc/no/such/optuna.db": "cannot create the folder /proc/no/such",
        str(folder): f"{folder} is a folder; name a file in it",
        f"sqlite:///{folder}": f"{folder} is a folder; name a file in it",
    }
    for storage, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)) as info:
            normalize_storage(storage)
        assert str(info.value).startswith(f"hydra.sweeper.storage={storage}")
    with pytest.raises(
        ConfigError, match="line 1 of the journal file is no Optuna journal"
    ) as info:
        open_storage(normalize_storage(str(a_file)))  # a text file as a journal
    assert str(a_file) in str(info.value) and "\n" not in str(info.value)


def test_hydra_start_up_does_not_import_optuna() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]\n"
        "print(names, 'optuna' in sys.modules, 'urbansound.sweep' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['BasicSweeper', 'UrbansoundSweeper'] False False"


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            {"sampler": {"_target_": "optuna.samplers.GridSampler", "seed": -1}},
            "hydra.sweeper.sampler (optuna.samplers.GridSampler) cannot be created: "
            "ValueError: Seed must be between 0 and 2**32 - 1",
        ),
        (
            {"pruner": {"_target_": "optuna.pruners.MedianPruner", "n_warmup_steps": -1}},
            "hydra.sweeper.pruner (optuna.pruners.MedianPruner) cannot be created: ValueError: "
            "Number of warmup steps cannot be negative, but got n_warmup_steps=-1.",
        ),
    ],
)
def test_a_sampler_or_pruner_optuna_refuses_is_one_line_before_the_study(
    tmp_path, node, message
) -> None:
    from tests.sweep.apps.sweeper_conf import sweeper_conf

    storage = tmp_path / "optuna.db"
    conf = sweeper_conf(storage=f"sqlite:///{storage}", **node)
    with pytest.raises(ConfigError) as info:
        sweep_settings(conf, arguments=["x=1,2"])
    assert str(info.value) == message  # one line (Hydra's wrapper message spans two)
    assert not storage.exists()  # said before the study was created
