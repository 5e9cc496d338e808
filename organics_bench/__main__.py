"""`python -m organics_bench` is the same as the `organics-bench` command."""

from organics_bench.cli import main

main()
