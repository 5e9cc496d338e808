"""`organics-bench mode=evaluate checkpoint=<best.pt | last.pt | run dir>`: a saved model on its validation and
test splits and its task's extra tests, written as evaluation.json in the new run dir (and, with publish=true,
beside the run's record)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from organics_bench.config_checks import construct
from organics_bench.errors import UserError
from organics_bench.io import write_json_atomic
from organics_bench.models.build import build_model
from organics_bench.tasks.objectives import objective
from organics_bench.training.checkpoint import check_compatible, load_checkpoint, stored_config
from organics_bench.training.placement import resolve_device, resolve_threads
from organics_bench.training.records import config_hash, job_config, provenance, publish_evaluation
from organics_bench.training.trainer import evaluate_split


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate the checkpoint `cfg.checkpoint` (a best.pt or last.pt, or a run dir: its best.pt) with the config
    stored in it; returns the evaluation record."""
    if not cfg.checkpoint:
        raise UserError("mode=evaluate needs checkpoint=<path to best.pt or last.pt, or a run dir>")
    path = Path(cfg.checkpoint).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: pass checkpoint=<run dir> or checkpoint=<path to a .pt file>")
    payload = load_checkpoint(path, resumable=False)
    cfg = stored_config(cfg, payload)
    if threads := resolve_threads(cfg.trainer.num_threads):
        torch.set_num_threads(threads)
    task = construct("task", lambda: instantiate(cfg.task, _convert_="all"))
    model_name = payload["model_name"]
    model = construct("model", lambda: build_model(cfg.model, task.spec, model_name, cfg.task.name))
    check_compatible(payload, model, model_name, cfg.task.name, path)
    model.load_state_dict(payload["model_state"])
    device = torch.device(resolve_device(cfg.trainer.device))
    model.to(device)
    data = task.load()
    splits = {"val": data.val, "test": data.test, **data.extra_tests}
    batch, limit = cfg.trainer.eval_batch_size, cfg.trainer.limit_eval_batches
    goal = objective(task.spec.objective)
    measured = {name: evaluate_split(model, split, batch, limit, device, goal) for name, split in splits.items()}
    resolved = job_config(cfg)
    record = {
        "checkpoint": str(path.resolve()),
        "epoch": payload.get("epoch"),
        "model": model_name,
        "task": cfg.task.name,
        "experiment": cfg.experiment_name,
        "seed": cfg.seed,
        "config_hash": config_hash(resolved),
        "metrics": {
            f"{name}/{kind}": value
            for name, (loss, acc) in measured.items()
            for kind, value in (("loss", loss), ("acc", acc))
        },
        **provenance(HydraConfig.get().overrides.task, str(device), resolved),
        "config": resolved,
    }
    out = Path(HydraConfig.get().runtime.output_dir) / "evaluation.json"
    write_json_atomic(record, out)
    if cfg.publish and cfg.paths.results_dir:
        publish_evaluation(out, Path(cfg.paths.results_dir), record, path.stem)
    metrics = record["metrics"]
    print(
        f"evaluated {path} (epoch {record['epoch']}): val acc {metrics['val/acc']:.4f}, test acc "
        f"{metrics['test/acc']:.4f}; record {out}"
    )
    return record
