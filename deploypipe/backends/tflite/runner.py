"""The tflite backend's runner: .tflite artifacts on the LiteRT interpreter (XNNPACK CPU delegate)."""

from __future__ import annotations

from deploypipe.litert.interpreter import LiteRtRunner


class TfliteRunner(LiteRtRunner):
    kind = "tflite"
