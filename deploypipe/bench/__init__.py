"""The characterization runner: measures artifacts through the runner interface only."""

from deploypipe.bench.results import BenchConfig, BenchResult
from deploypipe.bench.run import run_bench

__all__ = ["BenchConfig", "BenchResult", "run_bench"]
