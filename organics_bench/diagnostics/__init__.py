"""Stability diagnostics: Jacobian spectra, gradient flow through time, trajectories."""
