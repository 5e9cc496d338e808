"""organics-bench: train ORGaNICs and its rivals side by side, and see why it trains stably."""

__version__ = "0.1.0"
