"""The tensorrt backend: compiler, runner, facts."""
