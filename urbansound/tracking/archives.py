"""Offline archives: which are complete, which a run recorded, and the command that uploads them.

No ``comet_ml`` import here: the sweep summary and the Hydra callbacks list archives cheaply.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import zipfile
from collections.abc import Iterable
from pathlib import Path

from urbansound.utils.files import atomic_write

#: The files every complete offline archive holds (comet_ml's ``OFFLINE_EXPERIMENT_*`` names).
ARCHIVE_MEMBERS = ("experiment.json", "messages.json")


_INLINE_ARCHIVES = 8


def is_complete_archive(path: str | Path) -> bool:
    """Whether ``path`` is an offline archive that ``comet upload`` can read.

    A zip file that opens and holds the experiment's files (:data:`ARCHIVE_MEMBERS`, with
    ``experiment.json`` valid JSON naming the experiment's ``offline_id``): not a 0-byte file
    left by a full disk, an empty 22-byte placeholder left by a kill -9, or a truncated write.
    """
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if not set(ARCHIVE_MEMBERS) <= names:
                return False
            meta = json.loads(z.read("experiment.json"))
    except (OSError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        return False
    return isinstance(meta, dict) and bool(meta.get("offline_id"))


#: Files in which an experiment records its offline archive (``{"tracking": {"archive": ...}}``):
#: a run's or trial's ``results.json``, a final fit's ``fit.json``, and ``samples.json`` of the
#: dataset's class-samples experiment (written beside its figures after a run or sweep).
RECORDS = ("results.json", "fit.json", "samples.json")


def archives_under(*directories: str | Path) -> list[Path]:
    """The complete offline archives recorded under any of ``directories`` (see :data:`RECORDS`):
    one run's, or every sweep directory of a study.

    Archives that no longer exist or are incomplete (:func:`is_complete_archive`) are left out,
    and so are directories that do not exist. Sorted by path, each once.
    """
    found: set[Path] = set()
    for name, directory in ((n, Path(d)) for d in directories for n in RECORDS):
        for record in directory.rglob(name) if directory.is_dir() else ():
            try:
                archive = json.loads(record.read_text()).get("tracking", {}).get("archive")
            except (OSError, ValueError, AttributeError):
                continue
            if archive and is_complete_archive(archive):
                found.add(Path(archive))
    return sorted(found)


def upload_command(archives: Iterable[str | Path], *, list_file: str | Path | None = None) -> str:
    """The shell command that uploads the complete offline archives (``""`` when there are none).

    Incomplete archives (:func:`is_complete_archive`) are left out. Up to a few archives are named
    on the command line; with more and a ``list_file``, their paths are written there, one per
    line, and the command reads them with ``xargs``. Paths under the working directory are shown
    relative to it. Raises ``OutputError`` when ``list_file`` cannot be written.
    """
    paths = [Path(p) for p in archives if is_complete_archive(p)]
    if not paths:
        return ""

    def shown(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(p)

    if len(paths) > _INLINE_ARCHIVES and list_file is not None:
        list_file = atomic_write(list_file, "".join(f"{p.resolve()}\n" for p in paths))
        return f"xargs comet upload < {shlex.quote(shown(list_file))}"
    return "comet upload " + " ".join(shlex.quote(shown(p)) for p in paths)


def remove_incomplete(path: Path | None) -> bool:
    """Delete ``path`` if it is an incomplete archive; whether it did."""
    if path is None or not path.exists() or is_complete_archive(path):
        return False
    with contextlib.suppress(OSError):
        path.unlink()
    return True
