"""Where metrics go: the run directory's own files (the source of truth) and, optionally, Weights & Biases."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any


def write_text_atomic(text: str, path: Path) -> None:
    """Write text to a temporary file, then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(payload: dict, path: Path) -> None:
    """`write_text_atomic` of the payload as indented JSON."""
    write_text_atomic(json.dumps(payload, indent=2, default=_json_default, allow_nan=True) + "\n", path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class CsvLog:
    """An append-only CSV whose header is fixed by the first row; each row is flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fields: list[str] | None = None
        if path.exists() and path.stat().st_size:
            with path.open() as handle:
                self._fields = next(csv.reader(handle))

    def write(self, row: dict[str, Any]) -> None:
        new = self._fields is None
        if new:
            self._fields = list(row)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def _csv_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class WandbSink:
    """One wandb run per job, offline unless told otherwise; `finish` is always called by the trainer."""

    def __init__(self, mode: str, project: str, run_dir: Path, config: dict, name: str,
                 group: str | None = None, tags: list[str] | None = None, run_id: str | None = None) -> None:
        import wandb

        self.run = wandb.init(project=project, mode=mode, dir=str(run_dir), config=config, name=name, group=group,
                              tags=tags, id=run_id, resume="allow" if run_id else None)
        self.run.define_metric("epoch")
        for prefix in ("epoch/*", "val/*", "spectral/*"):
            self.run.define_metric(prefix, step_metric="epoch")

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log({k: v for k, v in scalars.items() if v is not None}, step=step)

    def log_spectrum(self, spectra: dict, step: int) -> None:
        """Histogram of the per-input stability statistic and a scatter of the first input's eigenvalues."""
        import numpy as np
        import wandb

        entries = spectra["layers"] if spectra["kind"] == "steady_state" else spectra["times"]
        values = np.array([v for entry in entries for v in entry["per_input"]], dtype=float)
        values = values[np.isfinite(values)]  # np.histogram raises on non-finite values
        last = entries[-1]["eigenvalues"] or {"re": [], "im": []}
        points = [[re, im] for re, im in zip(last["re"], last["im"]) if math.isfinite(re) and math.isfinite(im)]
        payload = {"spectral/eigenvalues": wandb.plot.scatter(wandb.Table(columns=["re", "im"], data=points),
                                                              "re", "im", title="eigenvalues (last probe time)")}
        if len(values):
            payload["spectral/statistic_hist"] = wandb.Histogram(np_histogram=np.histogram(values, bins=32))
        self.run.log(payload, step=step)

    def finish(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)
