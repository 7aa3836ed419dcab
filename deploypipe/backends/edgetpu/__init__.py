"""The edgetpu backend: compiler, runner, facts."""
