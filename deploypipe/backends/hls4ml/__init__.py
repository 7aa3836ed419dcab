"""The hls4ml backend: compiler, runner, facts."""
