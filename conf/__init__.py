"""Hydra configs, installed as the package `organics_bench.conf`."""
