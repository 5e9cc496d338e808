"""The training loop shared by every model: full BPTT, Adam + schedule, and never any gradient clipping.

A non-finite loss, or a gradient whose L2 norm is not finite, ends training as a result (`status: diverged`), not
as a crash: a NaN or inf entry would reach every weight through the optimizer step, and a norm past float32's range
means entries whose squares overflow, which turn Adam's second moment inf and freeze those weights for good.
Batch order in epoch e comes from (seed, e) alone, so a resumed run sees exactly the batches an uninterrupted one
would.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from organics_bench.diagnostics.runner import Diagnostics
from organics_bench.settings import TrainerSettings
from organics_bench.tasks.base import Split, TaskData
from organics_bench.tasks.objectives import CROSS_ENTROPY, Objective
from organics_bench.training.checkpoint import save_checkpoint
from organics_bench.training.placement import resolve_device
from organics_bench.training.records import FINISHED, RunRecord
from organics_bench.training.sinks import CsvLog, WandbSink

log = logging.getLogger(__name__)
# The record's grad_norm.fraction_above: the fraction of optimizer steps whose total gradient norm exceeds each level
# (non-finite norms count as above), the same levels for every model so that runs compare.
GRAD_NORM_LEVELS = (1, 10, 100, 1000)


class Diverged(Exception):
    """Raised inside an epoch when the loss stops being finite."""


class Trainer:
    """Trains `model` on `data`, writing history.csv, steps.csv and checkpoints/ under `run_dir`."""

    def __init__(
        self,
        model: nn.Module,
        data: TaskData,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        settings: TrainerSettings,
        run_dir: Path,
        record: RunRecord,
        wandb_sink: WandbSink | None = None,
        diagnostics: Diagnostics | None = None,
        objective: Objective = CROSS_ENTROPY,
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.settings = model, optimizer, scheduler, settings
        self.objective = objective
        self.device = torch.device(resolve_device(settings.device))
        self.model.to(self.device)
        self.train, self.val, self.test = (self._to_device(s) for s in (data.train, data.val, data.test))
        self.extra_tests = {name: self._to_device(split) for name, split in data.extra_tests.items()}
        self.curriculum = data.curriculum
        self.diagnostics = diagnostics
        self.record, self.run_dir, self.seed, self.wandb = record, run_dir, record.seed, wandb_sink
        self.ckpt_dir = run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.history_log, self.steps_log = CsvLog(run_dir / "history.csv"), CsvLog(run_dir / "steps.csv")
        self.param_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.epoch, self.global_step = 0, 0
        self.history: list[dict] = []
        self.step_grad_norms: list[float] = []
        self.best_val_acc, self.best_epoch, self.best_state = -math.inf, None, None
        self.status, self.diverged_at = "running", None
        self.test_metrics: dict = {}
        self.extra_test_acc: dict[str, float] = {}
        self.wall_time = 0.0

    # ----- public ---------------------------------------------------------------------------------
    def restore(self, payload: dict, steps: list[dict]) -> None:
        """Continue from a checkpoint written by `_save_last` (weights, optimizer, schedule, history). The run dir's
        history.csv and steps.csv are rewritten to end at the checkpoint (`steps`: the checkpointed run's steps.csv
        rows up to its step), and best.pt is written from the checkpoint."""
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        self.scheduler.load_state_dict(payload["scheduler_state"])
        self.epoch, self.global_step = payload["epoch"], payload["global_step"]
        self.history = list(payload["history"])
        self.step_grad_norms = payload["step_grad_norms"].tolist()
        self.best_val_acc, self.best_epoch = payload["best_val_acc"], payload["best_epoch"]
        self.best_state = payload["best_model_state"]
        self.wall_time = payload["wall_time"]
        self.history_log.reset(self.history)
        self.steps_log.reset(steps)
        if self.best_state is not None:
            self._save_best(self.best_val_acc)

    def fit(self) -> dict:
        """Train until `settings.epochs`; returns the run summary (also written into the record every epoch)."""
        try:
            with logging_redirect_tqdm():
                if self.diagnostics and self.global_step == 0:
                    self.diagnostics.measure(self.model, 0, 0)
                while self.epoch < self.settings.epochs:
                    self._run_epoch()
                if self.diagnostics:
                    if not self.diagnostics.due(self.global_step):
                        self.diagnostics.measure(self.model, self.global_step, self.epoch)
                    self.diagnostics.finish(self.model, self.test)
            self.status = "ok"
        except Diverged as stop:
            self.status = "diverged"
            log.warning("diverged: %s; every file so far is kept", stop)
        except KeyboardInterrupt:
            self.status = "interrupted"
            raise
        finally:
            if self.status == "running":
                self.status = "failed"
            self._final_evaluation()
            summary = self.summary()
            self.record.write(self.run_dir, summary)
        return summary

    def summary(self) -> dict:
        norms = torch.tensor(self.step_grad_norms, dtype=torch.float64)
        finite = norms[torch.isfinite(norms)]
        radii = [row["spectral_radius"] for row in self.history if row.get("spectral_radius") is not None]
        epoch_times = [row["epoch_time_s"] for row in self.history]
        last = self.history[-1] if self.history else {}
        return {
            "status": self.status,
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "diverged_at": self.diverged_at,
            "metrics": {
                **self.test_metrics,
                "best_val/acc": self.best_val_acc if self.best_epoch is not None else None,
                "best_epoch": self.best_epoch,
                "final_train/loss": last.get("train_loss"),
                "final_val/acc": last.get("val_acc"),
            },
            **({"extra_tests": dict(self.extra_test_acc)} if self.extra_test_acc else {}),
            "grad_norm": {
                "max": finite.max().item() if len(finite) else None,
                "p99": finite.quantile(0.99).item() if len(finite) else None,
                "median": finite.median().item() if len(finite) else None,
                "final": self.step_grad_norms[-1] if self.step_grad_norms else None,
                "nonfinite_steps": int((~torch.isfinite(norms)).sum()),
                "fraction_above": {
                    str(level): ((norms > level) | norms.isnan()).double().mean().item() if len(norms) else None
                    for level in GRAD_NORM_LEVELS
                },
            },
            "spectral_radius": {
                "first_epoch": radii[0] if radii else None,
                "final": radii[-1] if radii else None,
                "max": max(radii) if radii else None,
            },
            "time": {
                "wall_s": self.wall_time,
                "per_epoch_s": sorted(epoch_times)[len(epoch_times) // 2] if epoch_times else None,
            },
        }

    # ----- one epoch ------------------------------------------------------------------------------
    def _run_epoch(self) -> None:
        start = time.perf_counter()
        train_loss, train_acc, grad_norm_max = self._train_epoch()
        val_loss, val_acc = self.evaluate(self.val)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.epoch += 1
        elapsed = time.perf_counter() - start
        self.wall_time += elapsed
        row = {
            "epoch": self.epoch,
            "step": self.global_step,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "grad_norm_max": grad_norm_max,
            "spectral_radius": self._spectral_radius(),
            "epoch_time_s": elapsed,
        }
        self.history.append(row)
        self.history_log.write(row)
        if self.wandb:
            self.wandb.log(
                {f"epoch/{k}": v for k, v in row.items() if k not in ("epoch", "step")}
                | {"epoch": self.epoch, "val/acc": val_acc, "val/loss": val_loss},
                step=self.global_step,
            )
        if val_acc > self.best_val_acc:
            self.best_val_acc, self.best_epoch = val_acc, self.epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self._save_best(val_acc)
        self._save_last()
        if self.settings.keep_epochs_from and self.epoch >= self.settings.keep_epochs_from:
            save_checkpoint(
                {
                    **self.record.checkpoint_identity,
                    "epoch": self.epoch,
                    "val_acc": val_acc,
                    "model_state": self.model.state_dict(),
                },
                self.ckpt_dir / f"epoch_{self.epoch:04d}.pt",
            )
        self.record.write(self.run_dir, self.summary())
        log.info(
            "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2e | %.1f s",
            self.epoch,
            self.settings.epochs,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            lr,
            elapsed,
        )

    def _train_epoch(self) -> tuple[float, float, float]:
        self.model.train()
        order = torch.randperm(
            len(self.train), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        )
        if self.curriculum is not None:
            order = order[self.curriculum(self.epoch)[order]]
        order = order.to(self.device)
        batches = order.split(self.settings.batch_size)
        if self.settings.limit_train_batches:
            batches = batches[: self.settings.limit_train_batches]
        total_loss, correct, seen, grad_norm_max = 0.0, 0, 0, 0.0
        bar = tqdm(
            batches,
            desc=f"epoch {self.epoch + 1}/{self.settings.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=not self.settings.progress_bar,
        )
        for index in bar:
            x, y = self.train.x[index], self.train.y[index]
            loss, logits = self.model.loss(x, y, self.objective.loss)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                self._diverge(loss_value, f"loss became {loss_value}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_stats = self._gradient_stats()
            if not math.isfinite(grad_stats["train/grad_norm"]):
                self._diverge(
                    loss_value,
                    f"the gradient norm became {grad_stats['train/grad_norm']} "
                    f"({grad_stats['train/nonfinite_grads']} non-finite entries)",
                    nonfinite_grads=grad_stats["train/nonfinite_grads"],
                )
            self.optimizer.step()
            self.global_step += 1
            if self.diagnostics and self.diagnostics.due(self.global_step):
                self.diagnostics.measure(self.model, self.global_step, self.epoch + 1)
            self.step_grad_norms.append(grad_stats["train/grad_norm"])
            grad_norm_max = max(grad_norm_max, grad_stats["train/grad_norm"])
            step_row = {
                "epoch": self.epoch + 1,
                "step": self.global_step,
                "train/loss": loss_value,
                "lr": self.optimizer.param_groups[0]["lr"],
                **grad_stats,
            }
            self.steps_log.write(step_row)
            if self.wandb:
                self.wandb.log(step_row, step=self.global_step)
            bar.set_postfix(loss=f"{loss_value:.3f}", gnorm=f"{grad_stats['train/grad_norm']:.2g}", refresh=False)
            total_loss += loss_value * len(y)
            correct += self.objective.hits(logits, y).sum().item()
            seen += len(y)
        return total_loss / seen, correct / seen, grad_norm_max

    def _diverge(self, loss_value: float, what: str, **details: int) -> None:
        """Record where training stopped being finite (the loss, or the gradient norm, before the optimizer step
        takes it into the weights) and end training as a result."""
        step = self.global_step + 1
        self.diverged_at = {"epoch": self.epoch + 1, "step": step, "loss": str(loss_value), **details}
        if self.wandb:
            self.wandb.log({"train/loss": loss_value, "train/diverged": 1}, step=step)
        raise Diverged(f"{what} at step {step} (epoch {self.epoch + 1})")

    def _gradient_stats(self) -> dict[str, float]:
        """Total and per-parameter gradient L2 norms and the count of non-finite gradient entries."""
        params = dict(self.model.named_parameters())
        grads = [params[name].grad for name in self.param_names]
        norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
        nonfinite = torch.stack([(~torch.isfinite(g)).sum() for g in grads]).sum()
        values = torch.cat([torch.linalg.vector_norm(norms)[None], nonfinite[None].to(norms.dtype), norms]).tolist()
        stats = {"train/grad_norm": values[0], "train/nonfinite_grads": int(values[1])}
        stats.update({f"grad/{name}": value for name, value in zip(self.param_names, values[2:])})
        return stats

    def evaluate(self, split: Split) -> tuple[float, float]:
        """Mean loss and accuracy over a split (or its first `limit_eval_batches` batches)."""
        return evaluate_split(
            self.model,
            split,
            self.settings.eval_batch_size,
            self.settings.limit_eval_batches,
            self.device,
            self.objective,
        )

    # ----- helpers ----------------------------------------------------------------------------------
    def _final_evaluation(self) -> None:
        """Test accuracy of the last weights and of the best-validation weights (the reported number)."""
        if self.status not in FINISHED:
            return
        if self.status == "ok":
            loss, acc = self.evaluate(self.test)
            self.test_metrics.update({"last/test_loss": loss, "last/test_acc": acc})
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            loss, acc = self.evaluate(self.test)
            self.test_metrics.update({"test/loss": loss, "test/acc": acc})
            for name, split in self.extra_tests.items():
                self.extra_test_acc[name] = self.evaluate(split)[1]
            if self.wandb:
                self.wandb.log(
                    {"test/acc": acc, "test/loss": loss}
                    | {f"test/{name}/acc": v for name, v in self.extra_test_acc.items()},
                    step=self.global_step,
                )

    @torch.no_grad()
    def _spectral_radius(self) -> float | None:
        matrix = getattr(self.model, "recurrent_matrix", lambda: None)()
        if matrix is None:
            return None
        matrix = matrix.detach().cpu().double()
        if not torch.isfinite(matrix).all():
            return math.nan
        return torch.linalg.eigvals(matrix).abs().max().item()

    def _save_best(self, val_acc: float) -> None:
        save_checkpoint(
            {
                **self.record.checkpoint_identity,
                "epoch": self.best_epoch,
                "val_acc": val_acc,
                "model_state": self.best_state,
            },
            self.ckpt_dir / "best.pt",
        )

    def _save_last(self) -> None:
        save_checkpoint(
            {
                **self.record.checkpoint_identity,
                "model_state": self.model.state_dict(),
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler_state": self.scheduler.state_dict(),
                "epoch": self.epoch,
                "global_step": self.global_step,
                "history": self.history,
                "step_grad_norms": torch.tensor(self.step_grad_norms, dtype=torch.float64),
                "best_val_acc": self.best_val_acc,
                "best_epoch": self.best_epoch,
                "best_model_state": self.best_state,
                "wall_time": self.wall_time,
                "wandb_id": self.wandb.run_id if self.wandb else None,
            },
            self.ckpt_dir / "last.pt",
        )

    def _to_device(self, split: Split) -> Split:
        return Split(split.x.to(self.device), split.y.to(self.device))


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    split: Split,
    batch_size: int,
    limit_batches: int | None,
    device: torch.device,
    objective: Objective = CROSS_ENTROPY,
) -> tuple[float, float]:
    """Mean loss and accuracy (`objective`'s) of `model` over `split` (or its first `limit_batches` batches)."""
    model.eval()
    batches = torch.arange(len(split)).split(batch_size)
    if limit_batches:
        batches = batches[:limit_batches]
    total_loss, correct, seen = 0.0, 0, 0
    for index in batches:
        x, y = split.x[index].to(device), split.y[index].to(device)
        logits = model(x)
        total_loss += objective.loss(logits, y, reduction="sum").item()
        correct += objective.hits(logits, y).sum().item()
        seen += len(index)
    return total_loss / seen, correct / seen
