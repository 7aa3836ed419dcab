"""The tvm backend: compiler, runner, facts."""
