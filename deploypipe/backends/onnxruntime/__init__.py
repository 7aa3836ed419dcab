"""The onnxruntime backend: compiler, runner, facts."""
