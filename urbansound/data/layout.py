"""UrbanSound8K's layout: its ten classes, the metadata CSV's columns, the folds, the CSV's path.

Shared by the index (:mod:`urbansound.data.index`) and the demo corpus that imitates the dataset
(:mod:`urbansound.data.demo`). Source: J. Salamon, C. Jacoby and J. P. Bello, "A Dataset and
Taxonomy for Urban Sound Research", 22nd ACM International Conference on Multimedia, 2014, and the
dataset's README (https://urbansounddataset.weebly.com/urbansound8k.html).
"""

from __future__ import annotations

from pathlib import Path

#: Class names indexed by ``classID``.
CLASS_NAMES: tuple[str, ...] = (
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
)
#: The metadata CSV's columns, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "slice_file_name",
    "fsID",
    "start",
    "end",
    "salience",
    "fold",
    "classID",
    "class",
)
#: The predefined folds (``audio/fold1`` .. ``audio/fold10``).
FOLDS: tuple[int, ...] = tuple(range(1, 11))
#: The metadata CSV, relative to the dataset folder.
METADATA = Path("metadata") / "UrbanSound8K.csv"
