"""Theory experiments: numerical checks of the paper's stability results (SPEC §3.3, §5)."""
