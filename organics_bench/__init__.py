"""organics-bench: train ORGaNICs and its rivals side by side, and see why it trains stably.

`organics_bench.run([...overrides])` runs a benchmark job from Python (`organics_bench.api`); bad input raises
`organics_bench.UserError`."""

from typing import Any

from organics_bench import nn as nn  # the recurrent layers, torch.nn.LSTM-style: organics_bench.nn.ORGaNICsLayer, ...

__version__ = "0.1.0"
__all__ = ["UserError", "nn", "run"]


def __getattr__(name: str) -> Any:
    """`run` and `UserError`, imported on first use: the command line's machinery loads only when asked for."""
    if name == "run":
        from organics_bench.api import run

        return run
    if name == "UserError":
        from organics_bench.errors import UserError

        return UserError
    raise AttributeError(f"module 'organics_bench' has no attribute {name!r}")
