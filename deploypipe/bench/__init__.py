"""The characterization runner: measures artifacts through the runner interface only."""

from deploypipe.bench.results import BenchConfig, BenchResult, SweepConfig
from deploypipe.bench.run import run_bench

__all__ = ["BenchConfig", "BenchResult", "SweepConfig", "run_bench"]
