"""One training job: build the task, model, optimizer and sinks from the config, train, and record the result."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from organics_bench.config_checks import construct
from organics_bench.diagnostics.runner import Diagnostics
from organics_bench.io import copy_atomic, write_text_atomic
from organics_bench.models.base import engine_backend
from organics_bench.models.build import build_model
from organics_bench.plots import plot_training_curves
from organics_bench.settings import DiagnosticsSettings, TrainerSettings
from organics_bench.tasks.objectives import objective
from organics_bench.training.checkpoint import (
    check_compatible,
    load_checkpoint,
    resolve_checkpoint_path,
    resumed_config,
)
from organics_bench.training.placement import resolve_device, resolve_threads
from organics_bench.training.records import (
    FINISHED,
    RunRecord,
    config_hash,
    job_config,
    matching_snapshot,
    provenance,
    publish,
    retire_snapshot,
    run_results_dir,
    segment,
)
from organics_bench.training.run_dir import finished_record, previous_attempt
from organics_bench.training.sinks import WandbSink, read_csv_rows
from organics_bench.training.trainer import Trainer

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: DictConfig) -> dict:
    """Run the training job described by `cfg` in Hydra's output directory; returns its record (metrics.json).

    With `resume=<run dir or last.pt>` it continues that run (its stored config, `checkpoint.resumed_config`); a
    job re-run into its own run dir (a requeue, a sweep run again into its fixed `hydra.sweep.dir`) continues from
    the last.pt it left there, or, if it has finished, trains nothing and returns (and publishes) its record.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if not cfg.resume and (done := finished_record(run_dir)):
        log.info("already finished in %s (status %s): nothing to train", run_dir, done["status"])
        print(f"already finished (status {done['status']}): {run_dir}")
        _publish(cfg, run_dir, done)
        return done
    if cfg.skip_published and not cfg.resume and (found := _committed_run(cfg)):
        committed, record = found
        if record["status"] in FINISHED:
            message = f"already published: {committed}"
        else:
            message = f"in progress in a snapshot: {committed.parent} (make resume-long continues it)"
        log.info("%s: nothing to train", message)
        return record
    start = _starting_point(cfg, run_dir, list(hydra_cfg.overrides.task))
    cfg, model_name = start.cfg, start.model_name or hydra_cfg.runtime.choices["model"]
    config = job_config(cfg)
    settings = TrainerSettings(**config["trainer"])
    if threads := resolve_threads(settings.num_threads):
        torch.set_num_threads(threads)
    torch.set_flush_denormal(settings.flush_denormal)

    task = construct("task", lambda: instantiate(cfg.task, _convert_="all"))
    seed_everything(cfg.seed)
    model = construct("model", lambda: build_model(cfg.model, task.spec, model_name, cfg.task.name))
    if start.payload:
        check_compatible(start.payload, model, model_name, cfg.task.name, start.checkpoint)
    data = task.load()
    optimizer = construct(
        "optimizer", lambda: instantiate(cfg.optimizer)([p for p in model.parameters() if p.requires_grad])
    )
    scheduler = construct("scheduler", lambda: instantiate(cfg.scheduler)(optimizer))
    device = resolve_device(settings.device)
    origin = provenance(hydra_cfg.overrides.task, device, config)
    here = segment(
        start.payload["epoch"] if start.payload else 0,
        engine_backend(model, torch.device(device)),
        origin["git_revision"],
    )
    segments = _continued_segments(start, here)
    record = RunRecord.for_job(config, model_name, model, task, data, origin, segments)
    write_text_atomic(OmegaConf.to_yaml(config), run_dir / "config.yaml")

    wandb_sink = _wandb_sink(cfg, record, run_dir, start.payload) if cfg.logger.name == "wandb" else None
    diagnostic_settings = DiagnosticsSettings(**config["diagnostics"])
    goal = objective(task.spec.objective)
    diagnostics = (
        Diagnostics(diagnostic_settings, run_dir, data.val, wandb_sink, goal.loss)
        if diagnostic_settings.enabled and Diagnostics.applies_to(model)
        else None
    )
    trainer = Trainer(model, data, optimizer, scheduler, settings, run_dir, record, wandb_sink, diagnostics, goal)
    if start.payload:
        trainer.restore(start.payload, start.steps)
        _carry_diagnostics(start.checkpoint.parent.parent, run_dir, start.payload["global_step"])
        log.info("resumed from %s at epoch %d", start.checkpoint, trainer.epoch)
    try:
        summary = trainer.fit()
    except BaseException:
        if wandb_sink:
            wandb_sink.finish()
        raise
    if trainer.history:
        plot_training_curves(
            {model_name: trainer.history},
            run_dir / "figures" / "training_curves.png",
            title=f"{model_name} on {cfg.task.name} (seed {cfg.seed})",
        )
    final = record.as_dict(summary)  # as the trainer wrote it to metrics.json when fit() ended
    if wandb_sink:
        wandb_sink.finish(final, run_dir / "figures")
    _publish(cfg, run_dir, final)
    _report(summary, run_dir)
    return final


def _publish(cfg: DictConfig, run_dir: Path, record: dict) -> None:
    """With `publish=true`, copy the finished run's record into results/ and retire its in-progress snapshot."""
    if cfg.publish and cfg.paths.results_dir:
        results_dir = Path(cfg.paths.results_dir)
        log.info("results record: %s", publish(run_dir, results_dir, record))
        if retired := retire_snapshot(results_dir, record):
            log.info("finished: its in-progress snapshot %s is removed", retired)


def _committed_run(cfg: DictConfig) -> tuple[Path, dict] | None:
    """Where results/ already holds the job `cfg` describes (same config hash and seed), with that record: its
    published, finished record (results/runs/.../seed<k>.json), else the running record (metrics.json) of its
    in-progress snapshot."""
    if not cfg.paths.results_dir:
        return None
    results_dir, config = Path(cfg.paths.results_dir), job_config(cfg)
    experiment, seed, hash_ = config["experiment_name"], config["seed"], config_hash(config)
    model = HydraConfig.get().runtime.choices["model"]
    record = run_results_dir(results_dir, experiment, model, hash_) / f"seed{seed}.json"
    if record.is_file() and (published := json.loads(record.read_text())).get("status") in FINISHED:
        return record, published
    if snapshot := matching_snapshot(results_dir, experiment, seed, hash_):
        return snapshot / "metrics.json", json.loads((snapshot / "metrics.json").read_text())
    return None


@dataclass
class StartingPoint:
    """Where a run starts: from scratch, or from a checkpoint (its payload, its steps.csv rows up to it, and for
    `resume=` the config stored in it, which wins over the command line's)."""

    cfg: DictConfig
    checkpoint: Path | None = None
    payload: dict | None = None
    steps: list[dict] = field(default_factory=list)
    model_name: str | None = None


def _starting_point(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> StartingPoint:
    checkpoint = resolve_checkpoint_path(cfg.resume) if cfg.resume else previous_attempt(run_dir)
    if not checkpoint:
        return StartingPoint(cfg)
    payload = load_checkpoint(checkpoint)
    if cfg.resume:
        cfg = resumed_config(cfg, payload, overrides, checkpoint)
    steps = read_csv_rows(checkpoint.parent.parent / "steps.csv", payload["global_step"])
    return StartingPoint(cfg, checkpoint, payload, steps, payload["model_name"])


def _carry_diagnostics(source: Path, run_dir: Path, global_step: int) -> None:
    """A run resumed into another dir takes along its diagnostics up to the checkpoint's step (spectra/,
    gradient_flow/), so that its record, when published, covers the whole run."""
    if source.resolve() == run_dir.resolve():
        return
    for folder in ("spectra", "gradient_flow"):
        for path in sorted((source / folder).glob("step_*.json")):
            if int(path.stem.removeprefix("step_")) <= global_step:
                copy_atomic(path, run_dir / folder / path.name)


def _continued_segments(start: StartingPoint, here: dict) -> list[dict]:
    """The run's segments (`records.segment`) with this process's appended where it computes with another engine
    or other model code than the checkpoint's last segment, which it says in one line; the config is the same."""
    if not start.payload:
        return [here]
    unknown = {"from_epoch": 0, "engine": "unknown", "model_code": "unknown", "git_revision": "unknown"}
    segments = list(start.payload.get("segments") or [unknown])
    last = segments[-1]
    if (last["engine"], last["model_code"]) == (here["engine"], here["model_code"]):
        return segments
    log.warning(
        "resuming %s at epoch %d with engine %s and model code %s; it was trained by engine %s with model code %s "
        "(git %s): same config, numbers equal to rounding, not bit for bit; the record lists both",
        start.checkpoint,
        here["from_epoch"],
        here["engine"],
        here["model_code"],
        last["engine"],
        last["model_code"],
        last["git_revision"],
    )
    return [*segments, here]


def _wandb_sink(cfg: DictConfig, record: RunRecord, run_dir: Path, payload: dict | None) -> WandbSink:
    """The run's wandb run, named <experiment>/<model>/seed<k> [swept overrides], resumed with its checkpoint."""
    hydra_cfg = HydraConfig.get()
    name = f"{record.experiment}/{record.model}/seed{record.seed}"
    if hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.job.override_dirname:
        name += f" [{hydra_cfg.job.override_dirname}]"
    return WandbSink(
        mode=cfg.logger.mode,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        job_type=cfg.logger.job_type,
        run_dir=run_dir,
        config=record.config,
        name=name,
        group=record.experiment,
        tags=list(cfg.logger.tags),
        run_id=payload.get("wandb_id") if payload else None,
    )


def _report(summary: dict, run_dir: Path) -> None:
    metrics = summary["metrics"]
    if summary["status"] == "diverged":
        where = summary["diverged_at"]
        what = (
            f"gradient norm not finite, {where['nonfinite_grads']} non-finite entries (loss {where['loss']})"
            if "nonfinite_grads" in where
            else f"loss {where['loss']}"
        )
        print(f"DIVERGED at step {where['step']} (epoch {where['epoch']}): {what}; files kept in {run_dir}")
        return
    test = metrics.get("test/acc")
    print(
        f"{summary['status']}: test acc {test if test is None else f'{test:.4f}'} at best val epoch "
        f"{metrics['best_epoch']} (val acc {metrics['best_val/acc']:.4f}); max grad norm "
        f"{summary['grad_norm']['max']:.3g}; run dir {run_dir}"
    )
