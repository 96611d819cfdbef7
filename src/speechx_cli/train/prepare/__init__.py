"""Real corpora in: a source in a known layout -> the manifest that tokenizing and training read.

    layouts.py   the readers (LibriTTS, LibriSpeech, VCTK, LJSpeech, Common Voice, a folder, a JSONL list)
                 and auto-detection; items.py: what they yield
    process.py   one recording -> records: audio checks, word timings (textgrid.py or the aligner),
                 long recordings cut at pauses (segment.py)
    run.py       list -> resumable chunks (parallel) -> merge: manifest.jsonl, report.jsonl, summary.json
    noise.py     any folder of audio -> noise.jsonl rows
    lists.py     the codec trainer's file lists from a prepared corpus

The manifest is the one train/corpus.py writes (see its docstring), with a few more fields per line:
"timing" ("textgrid", "aligner" or null), "align_score" (the aligner's lowest per-frame acoustic
log-likelihood of any word: a word not in the audio drags it down), and for pieces of a long or
converted recording "source" (and "offset", s). Untranscribed audio has "text": "" and no words;
simulate.py uses it only where the transcript is optional (ns, sr, tse).
"""

from .process import PrepareOptions
from .run import prepare

__all__ = ["PrepareOptions", "prepare"]
