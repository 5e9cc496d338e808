"""Where metrics go: the run directory's own files (the source of truth) and, optionally, Weights & Biases."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from organics_bench.io import write_text_atomic


class CsvLog:
    """A CSV log whose header is fixed by its first row; each row is flushed as it is written. A new log starts the
    file afresh (a requeued job re-run into its own dir never appends to the rows of its earlier attempt)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fields: list[str] | None = None
        path.unlink(missing_ok=True)

    def reset(self, rows: list[dict[str, Any]]) -> None:
        """Replace the file, atomically, with `rows` (a resumed run's rows up to its checkpoint)."""
        self._fields = list(rows[0]) if rows else None
        if not rows:
            self.path.unlink(missing_ok=True)
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self._fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
        write_text_atomic(buffer.getvalue(), self.path)

    def write(self, row: dict[str, Any]) -> None:
        new = self._fields is None
        if new:
            self._fields = list(row)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def read_csv_rows(path: Path, max_step: int) -> list[dict[str, str]]:
    """The rows of a steps.csv (or any CSV with a "step" column) up to and including `max_step`; [] if absent."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["step"]) <= max_step]


def _csv_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class WandbSink:
    """One wandb run per job, offline unless told otherwise; `finish` is always called by the trainer."""

    def __init__(
        self,
        mode: str,
        project: str,
        run_dir: Path,
        config: dict,
        name: str,
        group: str | None = None,
        tags: list[str] | None = None,
        run_id: str | None = None,
        entity: str | None = None,
        job_type: str | None = None,
    ) -> None:
        import wandb

        self.run = wandb.init(
            project=project,
            entity=entity,
            job_type=job_type,
            mode=mode,
            dir=str(run_dir),
            config=config,
            name=name,
            group=group,
            tags=tags,
            id=run_id,
            resume="allow" if run_id else None,
        )
        self.run.define_metric("epoch")
        for prefix in ("epoch/*", "val/*", "spectral/*", "gradient_flow/*"):
            self.run.define_metric(prefix, step_metric="epoch")
        self.run.define_metric("val/acc", step_metric="epoch", summary="max")

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
        payload = {
            "spectral/eigenvalues": wandb.plot.scatter(
                wandb.Table(columns=["re", "im"], data=points), "re", "im", title="eigenvalues (last probe time)"
            )
        }
        if len(values):
            payload["spectral/statistic_hist"] = wandb.Histogram(np_histogram=np.histogram(values, bins=32))
        self.run.log(payload, step=step)

    def finish(self, record: dict | None = None, figures: Path | None = None) -> None:
        """End the run. With the run's `record`: its summary (status, best_val/acc, best_epoch, test/acc, n_params,
        diverged_at), a "diverged" tag and a failed state for a diverged run, and the figures as images. Without
        (an exception or a stop): a failed state."""
        import wandb

        if record is None:
            self.run.finish(exit_code=1)
            return
        metrics = record["metrics"]
        self.run.summary.update(
            {
                "status": record["status"],
                "best_val/acc": metrics.get("best_val/acc"),
                "best_epoch": metrics.get("best_epoch"),
                "test/acc": metrics.get("test/acc"),
                "n_params": record["n_params"],
                "diverged_at": record.get("diverged_at"),
                "config_hash": record["config_hash"],
            }
        )
        if record["status"] == "diverged":
            self.run.tags = (*self.run.tags, "diverged")
        images = {f"figures/{path.stem}": wandb.Image(str(path)) for path in sorted((figures or Path()).glob("*.png"))}
        if images:
            self.run.log(images)
        self.run.finish(exit_code=0 if record["status"] == "ok" else 1)
