"""The openvino backend: compiler, runner, facts."""
