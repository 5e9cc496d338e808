"""One training job: build the task, model, optimizer and sinks from the config, train, and record the result."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from organics_bench.config_checks import construct
from organics_bench.diagnostics.runner import Diagnostics, DiagnosticsSettings
from organics_bench.io import write_json_atomic, write_text_atomic
from organics_bench.models.base import count_trainable
from organics_bench.models.build import build_model
from organics_bench.plots import plot_training_curves
from organics_bench.training.checkpoint import (check_compatible, load_checkpoint, resolve_checkpoint_path,
                                                 resumed_config)
from organics_bench.training.records import build_record, environment, git_revision, publish
from organics_bench.training.run_dir import previous_attempt
from organics_bench.training.sinks import WandbSink, read_csv_rows
from organics_bench.training.placement import resolve_device, resolve_threads
from organics_bench.training.trainer import Trainer, TrainerSettings

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: DictConfig) -> dict:
    """Run the training job described by `cfg` in Hydra's output directory; returns the run summary.

    With `resume=<run dir or last.pt>` it continues that run (its stored config, `checkpoint.resumed_config`); a
    job re-run into its own run dir (a requeue) continues from the last.pt it left there.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    model_name = hydra_cfg.runtime.choices["model"]
    resume_from = resolve_checkpoint_path(cfg.resume) if cfg.resume else previous_attempt(run_dir)
    payload = load_checkpoint(resume_from) if resume_from else None
    if payload:
        steps_so_far = read_csv_rows(resume_from.parent.parent / "steps.csv", payload["global_step"])
        if cfg.resume:
            cfg = resumed_config(cfg, payload, list(hydra_cfg.overrides.task), resume_from)
        model_name = payload["model_name"]
    identity = {"task": cfg.task.name, "model": model_name, "experiment": cfg.experiment_name, "seed": cfg.seed}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved_yaml = OmegaConf.to_yaml(resolved)
    settings = TrainerSettings(**resolved["trainer"])
    if threads := resolve_threads(settings.num_threads):
        torch.set_num_threads(threads)
    torch.set_flush_denormal(settings.flush_denormal)

    task = construct("task", lambda: instantiate(cfg.task, _convert_="all"))
    spec = task.spec
    seed_everything(cfg.seed)
    model = construct("model", lambda: build_model(cfg.model, spec, model_name, cfg.task.name))
    if payload:
        check_compatible(payload, model, model_name, cfg.task.name, resume_from)
    data = task.load()

    optimizer = construct("optimizer", lambda: instantiate(cfg.optimizer)(
        [p for p in model.parameters() if p.requires_grad]))
    scheduler = construct("scheduler", lambda: instantiate(cfg.scheduler)(optimizer))
    write_text_atomic(resolved_yaml, run_dir / "config.yaml")
    command = " ".join(["organics-bench", *hydra_cfg.overrides.task])
    record_base = {
        "identity": identity, "n_params": count_trainable(model), "epochs_planned": settings.epochs,
        "command": command, "git": git_revision(Path(__file__).resolve().parent),
        "task_record": {"spec": vars(spec) | {"metrics": list(spec.metrics), "input_shape": list(spec.input_shape)},
                        **data.record},
        "env": environment(resolve_device(settings.device)), "config": resolved,
    }

    def write_record(summary: dict) -> dict:
        record = build_record(summary=summary, **record_base)
        write_json_atomic(record, run_dir / "metrics.json")
        return record

    wandb_sink = None
    if cfg.logger.name == "wandb":
        name = f"{cfg.experiment_name}/{model_name}/seed{cfg.seed}"
        if hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.job.override_dirname:
            name += f" [{hydra_cfg.job.override_dirname}]"  # the swept overrides
        wandb_sink = WandbSink(mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
                               job_type=cfg.logger.job_type, run_dir=run_dir, config=resolved, name=name,
                               group=cfg.experiment_name, tags=list(cfg.logger.tags),
                               run_id=payload.get("wandb_id") if payload else None)
    diagnostics = None
    diagnostic_settings = DiagnosticsSettings(**resolved["diagnostics"])
    if diagnostic_settings.enabled and Diagnostics.applies_to(model):
        diagnostics = Diagnostics(diagnostic_settings, run_dir, data.val, wandb_sink)
    trainer = Trainer(model, data, optimizer, scheduler, settings, run_dir, cfg.seed, diagnostics=diagnostics,
                      summarize_extra_tests=getattr(task, "summarize", None),
                      identity={"model_name": model_name, "task_name": cfg.task.name,
                                "config_yaml": resolved_yaml},
                      wandb_sink=wandb_sink, write_record=write_record)
    if payload:
        trainer.restore(payload, steps_so_far)
        log.info("resumed from %s at epoch %d", resume_from, trainer.epoch)
    try:
        summary = trainer.fit()
        if trainer.history:
            plot_training_curves({model_name: trainer.history}, run_dir / "figures" / "training_curves.png",
                                 title=f"{model_name} on {cfg.task.name} (seed {cfg.seed})")
    except BaseException:
        if wandb_sink:
            wandb_sink.finish()
        raise
    record = write_record(summary)
    if wandb_sink:
        wandb_sink.finish(record, run_dir / "figures")
    if cfg.publish and cfg.paths.results_dir:
        published = publish(run_dir, Path(cfg.paths.results_dir), record)
        log.info("results record: %s", published)
    _report(summary, run_dir)
    return summary


def _report(summary: dict, run_dir: Path) -> None:
    metrics = summary["metrics"]
    if summary["status"] == "diverged":
        where = summary["diverged_at"]
        what = (f"{where['nonfinite_grads']} non-finite gradient entries (loss {where['loss']})"
                if "nonfinite_grads" in where else f"loss {where['loss']}")
        print(f"DIVERGED at step {where['step']} (epoch {where['epoch']}): {what}; files kept in {run_dir}")
        return
    test = metrics.get("test/acc")
    print(f"{summary['status']}: test acc {test if test is None else f'{test:.4f}'} at best val epoch "
          f"{metrics['best_epoch']} (val acc {metrics['best_val/acc']:.4f}); max grad norm "
          f"{summary['grad_norm']['max']:.3g}; run dir {run_dir}")
