"""Which dataset a run uses: UrbanSound8K where it is found, else the built-in demo corpus.

The order: ``data.root``; else the ``URBANSOUND8K`` environment variable; else
``./data/UrbanSound8K`` (relative to the working directory); else the demo corpus of
:mod:`urbansound.data.demo`, generated once into ``data.demo_dir`` and said loudly. This module
only decides and logs the choice; :func:`urbansound.data.index.load_index` then reads the folder
it names, real or demo alike, and the demo synthesiser is imported only when it is needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from urbansound.config.settings import DataSettings
from urbansound.errors import DataError

log = logging.getLogger(__name__)

#: The environment variable naming an UrbanSound8K folder.
ENV_VAR = "URBANSOUND8K"
#: Where a copy of UrbanSound8K is looked for last, relative to the working directory.
LOCAL_ROOT = Path("data") / "UrbanSound8K"


def resolve_dataset(data: DataSettings) -> tuple[Path, str]:
    """Decide which dataset a run uses and say so in the log.

    The order: ``data.root``; else the ``URBANSOUND8K`` environment variable; else
    ``./data/UrbanSound8K`` (relative to the working directory); else the built-in demo corpus,
    generated once into ``data.demo_dir``.

    Returns
    -------
    (root, name)
        The dataset folder and ``"urbansound8k"`` or ``"demo"``.

    Raises
    ------
    DataError
        ``data.root`` or ``URBANSOUND8K`` is set but names no folder (an explicit choice is never
        silently replaced by the demo corpus).
    """
    if data.root is not None:
        root = Path(data.root).expanduser()
        if not os.path.isdir(root):
            raise DataError(
                f"data.root={data.root} does not exist; point it at an UrbanSound8K folder "
                "(with metadata/UrbanSound8K.csv and audio/fold1..fold10), or leave it unset "
                "to use $URBANSOUND8K, ./data/UrbanSound8K or the built-in demo corpus"
            )
        log.info("dataset: UrbanSound8K at %s (from data.root)", root.resolve())
        return root.resolve(), "urbansound8k"
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        if not os.path.isdir(root):
            raise DataError(
                f"${ENV_VAR}={env} does not exist; point it at an UrbanSound8K folder, or "
                f"unset it to use ./data/UrbanSound8K or the built-in demo corpus"
            )
        log.info("dataset: UrbanSound8K at %s (from $%s)", root.resolve(), ENV_VAR)
        return root.resolve(), "urbansound8k"
    local = Path.cwd() / LOCAL_ROOT
    if os.path.isdir(local):
        log.info("dataset: UrbanSound8K at %s (found ./%s)", local, LOCAL_ROOT.as_posix())
        return local.resolve(), "urbansound8k"
    clips_per_class = data.demo_clips_per_class
    log.warning(
        "dataset: no UrbanSound8K found (data.root unset, $%s unset, no ./%s): using the "
        "built-in DEMO corpus (synthetic sounds, %d clips per class) from %s. Demo accuracy "
        "says the pipeline works, not how well urban sounds are classified; set data.root to "
        "UrbanSound8K for real results",
        ENV_VAR,
        LOCAL_ROOT.as_posix(),
        clips_per_class,
        data.demo_dir,
    )
    from urbansound.data.demo import make_demo_corpus  # the demo synthesiser, only when it is used

    try:
        root = make_demo_corpus(Path(data.demo_dir), clips_per_class=clips_per_class)
    except OSError as exc:  # e.g. a name too long, a loop of symbolic links
        raise DataError(
            f"data.demo_dir={data.demo_dir}: cannot create the demo corpus there "
            f"({exc.strerror or exc}); set data.demo_dir to a writable folder"
        ) from None
    return root.resolve(), "demo"
