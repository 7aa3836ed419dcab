"""The tflite backend: compiler, runner, facts."""
