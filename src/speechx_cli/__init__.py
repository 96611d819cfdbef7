"""speechx: edit and generate speech with one neural codec language model (SpeechX)."""

__version__ = "0.1.0"
