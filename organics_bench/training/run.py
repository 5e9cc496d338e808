"""One training job: build the task, model, optimizer and sinks from the config, train, and record the result."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from organics_bench.diagnostics.runner import Diagnostics, DiagnosticsSettings
from organics_bench.models.base import count_trainable
from organics_bench.models.build import build_model
from organics_bench.plots import plot_training_curves
from organics_bench.training.checkpoint import check_compatible, load_checkpoint, resolve_checkpoint_path
from organics_bench.training.records import build_record, environment, git_revision, publish
from organics_bench.training.sinks import WandbSink, write_json_atomic
from organics_bench.training.trainer import Trainer, TrainerSettings, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: DictConfig) -> dict:
    """Run the training job described by `cfg` in Hydra's output directory; returns the results record."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    model_name = hydra_cfg.runtime.choices["model"]
    identity = {"task": cfg.task.name, "model": model_name, "experiment": cfg.experiment_name, "seed": cfg.seed}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved_yaml = OmegaConf.to_yaml(resolved)
    settings = TrainerSettings(**resolved["trainer"])
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    torch.set_flush_denormal(settings.flush_denormal)

    task = instantiate(cfg.task, _convert_="all")
    spec = task.spec
    seed_everything(cfg.seed)
    model = build_model(cfg.model, spec, model_name, cfg.task.name)
    payload = None
    if cfg.resume:
        ckpt_path = resolve_checkpoint_path(cfg.resume)
        payload = load_checkpoint(ckpt_path)
        check_compatible(payload, model, model_name, cfg.task.name, ckpt_path)
    data = task.load()

    optimizer = instantiate(cfg.optimizer)([p for p in model.parameters() if p.requires_grad])
    scheduler = instantiate(cfg.scheduler)(optimizer)
    (run_dir / "config.yaml").write_text(resolved_yaml)
    command = " ".join(["organics-bench", *hydra_cfg.overrides.task])
    record_base = {
        "identity": identity, "n_params": count_trainable(model), "epochs_planned": settings.epochs,
        "command": command, "git": git_revision(Path(__file__).resolve().parent),
        "task_record": {"spec": vars(spec) | {"metrics": list(spec.metrics), "input_shape": list(spec.input_shape)},
                        **data.record},
        "env": environment(resolve_device(settings.device)), "config": resolved,
    }
    write_record = lambda summary: write_json_atomic(  # noqa: E731
        build_record(summary=summary, **record_base), run_dir / "metrics.json")

    wandb_sink = None
    if cfg.logger.name == "wandb":
        wandb_sink = WandbSink(mode=cfg.logger.mode, project=cfg.logger.project, run_dir=run_dir, config=resolved,
                               name=f"{cfg.experiment_name}/{model_name}/seed{cfg.seed}", group=cfg.experiment_name,
                               tags=list(cfg.logger.tags), run_id=payload.get("wandb_id") if payload else None)
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
        trainer.restore(payload)
        log.info("resumed from %s at epoch %d", cfg.resume, trainer.epoch)
    exit_code = 1
    try:
        summary = trainer.fit()
        exit_code = 0
    finally:
        if wandb_sink:
            wandb_sink.finish(exit_code)
    if trainer.history:
        plot_training_curves({model_name: trainer.history}, run_dir / "figures" / "training_curves.png",
                             title=f"{model_name} on {cfg.task.name} (seed {cfg.seed})")
    if cfg.paths.results_dir:
        published = publish(run_dir, Path(cfg.paths.results_dir), cfg.experiment_name, model_name, cfg.seed)
        log.info("results record: %s", published)
    _report(summary, run_dir)
    return summary


def _report(summary: dict, run_dir: Path) -> None:
    metrics = summary["metrics"]
    if summary["status"] == "diverged":
        where = summary["diverged_at"]
        print(f"DIVERGED at step {where['step']} (epoch {where['epoch']}): loss {where['loss']}; "
              f"files kept in {run_dir}")
        return
    test = metrics.get("test/acc")
    print(f"{summary['status']}: test acc {test if test is None else f'{test:.4f}'} at best val epoch "
          f"{metrics['best_epoch']} (val acc {metrics['best_val/acc']:.4f}); max grad norm "
          f"{summary['grad_norm']['max']:.3g}; run dir {run_dir}")
