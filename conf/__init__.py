"""Hydra configs, installed as the package `organics_bench.conf`. Importing it registers the theory experiments'
settings (`organics_bench.theory.settings`) in Hydra's ConfigStore as `theory/<name>`, before any YAML is read."""

from organics_bench.theory.settings import register

register()
