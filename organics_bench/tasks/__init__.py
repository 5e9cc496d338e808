"""Tasks: each builds in-memory train/val/test tensors and a `TaskSpec` that models take their dims from."""
