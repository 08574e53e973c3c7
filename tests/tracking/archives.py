"""Reading a Comet offline archive back, for the tracking tests (comet_ml's own file format)."""

from __future__ import annotations

import json
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Archive:
    """What an offline archive holds, by kind."""

    experiment: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    others: dict[str, Any] = field(default_factory=dict)
    uploads: list[tuple[str, str, bytes]] = field(default_factory=list)  # (type, name, content)

    def upload(self, name: str) -> bytes:
        matches = [content for _, n, content in self.uploads if n == name]
        assert len(matches) == 1, f"{name}: {len(matches)} uploads named so"
        return matches[0]

    def uploads_of(self, kind: str) -> list[str]:
        return sorted(n for t, n, _ in self.uploads if t == kind)


def read_archive(path: str | Path) -> Archive:
    """The experiment, parameters, metrics, "others" and uploads of the archive at ``path``."""
    with zipfile.ZipFile(path) as z:
        archive = Archive(experiment=json.loads(z.read("experiment.json")))
        lines = z.read("messages.json").decode().splitlines()
        for message in (json.loads(line) for line in lines if line.strip()):
            kind, payload = message["type"], message["payload"]
            if kind == "parameter_msg":
                param = payload.get("param") or payload.get("params")
                if param["source"] == "manual":
                    archive.parameters[param["paramName"]] = param["paramValue"]
            elif kind == "metric_msg":
                metric = payload["metric"]
                archive.metrics[metric["metricName"]][metric["step"]] = metric["metricValue"]
            elif kind == "log_other":
                archive.others[payload["key"]] = payload["value"]
            elif kind == "file_upload":
                params = payload["additional_params"]
                name = params.get("fileName") or params.get("figName")  # figName: images
                archive.uploads.append((payload["upload_type"], name, z.read(payload["file_path"])))
    return archive
