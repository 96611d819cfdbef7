"""speechx: edit and generate speech with one neural codec language model (SpeechX).

    import speechx_cli
    model = speechx_cli.load_model()                 # checkpoint=None: the bundled demo; device="auto"
    model.denoise("noisy.wav").save("clean.wav")
    out = model.edit_words("in.wav", "the cat sat", "the dog sat")   # out.samples, out.sample_rate

The API is api.py; the `speechx` command (cli.py) is a layer over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Audio", "EditResult", "SpeechXModel", "load_model"]

if TYPE_CHECKING:
    from .api import Audio, EditResult, SpeechXModel, load_model


def __getattr__(name: str):
    # api.py brings in torch and the models (seconds): `import speechx_cli.train.synth` and the other
    # torch-free modules (the corpus builder's worker processes) stay light; the API loads on first use.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
