"""How well the pocketsphinx aligner (speechx_cli.align) finds word boundaries.

Synthetic sentences come with the synthesizer's own word times (train/synth.py: flite -psdur,
festival word_start/word_end), which are the reference. Every word start and word end is one
boundary; the error is |aligned - reference| in ms. Training-pool voices only (flite kal16, rms;
festival kal_diphone, ked_diphone): the evaluation voices (slt, awb) are reserved.

    python -m speechx_cli.eval.align_accuracy            # 20 sentences x 4 voices, ~30 s
    python -m speechx_cli.eval.align_accuracy -n 5
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from ..align import align_words
from ..train.synth import SAMPLE_RATE, Voice, synthesize, synthesize_festival_batch

VOICES: tuple[str, ...] = ("flite:kal16", "flite:rms", "festival:kal_diphone", "festival:ked_diphone")

# Harvard sentences (IEEE 1969, lists 1-2): public domain, phonetically balanced.
SENTENCES: tuple[str, ...] = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
)


@dataclass(frozen=True)
class Accuracy:
    errors_ms: np.ndarray  # (B,) |aligned - reference| per boundary
    failures: int  # sentences the aligner could not align

    @property
    def median(self) -> float:
        return float(np.median(self.errors_ms))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.errors_ms, 90))

    def within(self, ms: float) -> float:
        return float(np.mean(self.errors_ms <= ms))


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip(".,!?;:").lower() for w in text.split())


def _syntheses(voice: Voice, sentences: tuple[str, ...]) -> list:
    if voice.engine == "festival":  # one process for the whole batch (start-up ~0.6 s)
        return synthesize_festival_batch(voice.name, [(s, _words(s)) for s in sentences])
    return [synthesize(voice, s, _words(s)) for s in sentences]


def measure(voice_id: str, sentences: tuple[str, ...] = SENTENCES) -> Accuracy:
    """Boundary errors of the aligner against the synthesizer's word times for one voice."""
    voice = Voice.parse(voice_id)
    errors, failures = [], 0
    for text, syn in zip(sentences, _syntheses(voice, sentences)):
        if isinstance(syn, Exception):
            raise syn
        try:
            aligned = align_words(syn.audio, SAMPLE_RATE, _words(text))
        except ValueError:
            failures += 1
            continue
        for a, ref in zip(aligned, syn.words):
            errors += [abs(a.start - ref.start), abs(a.end - ref.end)]
    return Accuracy(np.asarray(errors) * 1000.0, failures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=len(SENTENCES), help="sentences per voice")
    parser.add_argument("--voices", nargs="*", default=list(VOICES))
    args = parser.parse_args(argv)
    sentences = SENTENCES[: args.n]
    results = {v: measure(v, sentences) for v in args.voices}
    print(f"{'voice':24} {'bounds':>6} {'fail':>4} {'median ms':>9} {'p90 ms':>7} {'<=30ms':>7} {'<=60ms':>7}")
    for v, acc in results.items():
        print(f"{v:24} {len(acc.errors_ms):6d} {acc.failures:4d} {acc.median:9.1f} {acc.p90:7.1f} "
              f"{acc.within(30):7.1%} {acc.within(60):7.1%}")
    all_ = Accuracy(np.concatenate([a.errors_ms for a in results.values()]),
                    sum(a.failures for a in results.values()))
    print(f"{'all':24} {len(all_.errors_ms):6d} {all_.failures:4d} {all_.median:9.1f} {all_.p90:7.1f} "
          f"{all_.within(30):7.1%} {all_.within(60):7.1%}")


if __name__ == "__main__":
    main()
