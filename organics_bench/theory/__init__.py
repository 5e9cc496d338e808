"""Theory experiments: numerical checks of the paper's stability results (docs/equations.md, 'Algorithm 1' and
'Stability theory')."""
