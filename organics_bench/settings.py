"""The settings of the `trainer` and `diagnostics` config groups, as dataclasses: the config checks read their
field names, the trainer and the diagnostics take them as arguments. (The theory experiments' settings live in
`organics_bench.theory.settings`, which imports nothing of the package either.)"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainerSettings:
    """The `trainer` config group."""

    epochs: int
    batch_size: int
    eval_batch_size: int = 1000
    device: str = "auto"
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    progress_bar: bool = True
    num_threads: int | None = None
    flush_denormal: bool = True
    keep_epochs_from: int | None = None


@dataclass
class DiagnosticsSettings:
    """The `diagnostics` config group."""

    enabled: bool = True
    every_n_steps: int = 500
    probe_size: int = 4
    spectra_at: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    gradient_flow: bool = True
    trajectories: bool = True
    final_inputs: int = 1000
