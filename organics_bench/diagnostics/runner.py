"""Run the stability diagnostics during training on a fixed probe batch, and save what they find.

Every `every_n_steps` optimizer steps (and before the first and after the last), for sequence models: Jacobian
spectra along the probe trajectory -> spectra/step_XXXXXX.json and gradient flow through time ->
gradient_flow/step_XXXXXX.json; for static models with steady states (`HasSteadyState`: the ORGaNICs fixed-point
layers, the static SSN): the spectra at each layer's steady state. All go to wandb too; at the end,
figures/{spectra,gradient_flow,trajectories}.png (sequence) or figures/spectra.png and
steady_state_spectra.{json,png} over `final_inputs` test inputs (static; paper Figs. 6 and 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from organics_bench.diagnostics.dynamics import gradient_flow, probe_spectra, trajectory
from organics_bench.diagnostics.plots import (
    plot_gradient_flow,
    plot_spectra,
    plot_steady_state_histogram,
    plot_trajectories,
)
from organics_bench.diagnostics.steady_state import steady_state_spectra
from organics_bench.io import write_json_atomic
from organics_bench.models.base import DynamicalModel, HasSteadyState
from organics_bench.settings import DiagnosticsSettings
from organics_bench.tasks.base import Split


class MetricsSink(Protocol):
    """Where measurements are logged as they are made (the trainer's wandb run, `training.sinks.WandbSink`)."""

    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def log_spectrum(self, spectra: dict, step: int) -> None: ...


class Diagnostics:
    """Owns the probe batch and the history of what was measured on it; gradient flow differentiates `criterion`,
    the task's loss (cross-entropy unless it says otherwise)."""

    def __init__(
        self,
        settings: DiagnosticsSettings,
        run_dir: Path,
        probe: Split,
        wandb_sink: MetricsSink | None = None,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    ) -> None:
        self.settings, self.run_dir, self.wandb, self.criterion = settings, run_dir, wandb_sink, criterion
        self.probe_x, self.probe_y = probe.x[: settings.probe_size], probe.y[: settings.probe_size]
        self.spectra: list[dict] = []
        self.flows: list[dict] = []

    @staticmethod
    def applies_to(model: torch.nn.Module) -> bool:
        return isinstance(model, (DynamicalModel, HasSteadyState))

    def due(self, global_step: int) -> bool:
        return self.settings.enabled and global_step % self.settings.every_n_steps == 0

    def measure(self, model: DynamicalModel | HasSteadyState, global_step: int, epoch: int) -> None:
        """Spectra and gradient flow now; results saved and logged."""
        was_training = model.training
        model.eval()
        if isinstance(model, HasSteadyState):
            spectra = steady_state_spectra(model, self.probe_x)
            scalars = {f"spectral/max_real_layer{i + 1}": layer["worst"] for i, layer in enumerate(spectra["layers"])}
        else:
            spectra = probe_spectra(model, self.probe_x, list(self.settings.spectra_at))
            scalars = {f"spectral/{spectra['statistic']}_at{e['fraction']:g}": e["worst"] for e in spectra["times"]}
        spectra |= {"step": global_step, "epoch": epoch}
        self.spectra.append(spectra)
        write_json_atomic(spectra, self.run_dir / "spectra" / f"step_{global_step:06d}.json")
        scalars[f"spectral/{spectra['statistic']}"] = spectra["worst"]
        if self.settings.gradient_flow and isinstance(model, DynamicalModel):
            with torch.enable_grad():
                norms = gradient_flow(model, self.probe_x, self.probe_y, self.criterion)
            flow = {"step": global_step, "epoch": epoch, "grad_norm_by_time": norms}
            self.flows.append(flow)
            write_json_atomic(flow, self.run_dir / "gradient_flow" / f"step_{global_step:06d}.json")
            finite = [n for n in norms if math.isfinite(n) and n > 0]
            if finite:
                scalars["gradient_flow/first_over_last"] = finite[0] / finite[-1]
        if self.wandb:
            self.wandb.log(scalars, step=global_step)
            self.wandb.log_spectrum(spectra, step=global_step)
        model.train(was_training)

    def finish(self, model: torch.nn.Module, test: Split) -> None:
        """Figures of everything measured; the trajectories of the trained sequence model (paper Fig. 7), or the
        steady-state spectra of the trained static model over test inputs (paper Fig. 5)."""
        figures = self.run_dir / "figures"
        if self.spectra:
            plot_spectra(self.spectra, figures / "spectra.png")
        if self.flows:
            plot_gradient_flow(self.flows, figures / "gradient_flow.png")
        if isinstance(model, HasSteadyState):
            model.eval()
            final = steady_state_spectra(model, test.x[: self.settings.final_inputs])
            write_json_atomic(final, self.run_dir / "steady_state_spectra.json")
            plot_steady_state_histogram(final, figures / "steady_state_spectra.png")
        elif self.settings.trajectories:
            states = trajectory(model, self.probe_x[:1])[:, 0].cpu()
            plot_trajectories(states, getattr(model, "hidden_size", states.shape[1]), figures / "trajectories.png")
