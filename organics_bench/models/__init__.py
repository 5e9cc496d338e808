"""Models. Every sequence model follows the `DynamicalModel` protocol of `base.py`."""
