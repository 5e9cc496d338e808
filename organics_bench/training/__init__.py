"""The one trainer shared by every model and task: BPTT, no gradient clipping, diagnostics, checkpoints."""
