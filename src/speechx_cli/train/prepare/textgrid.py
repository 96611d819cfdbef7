"""Word timings from a Montreal Forced Aligner TextGrid (read with praatio).

MFA writes one TextGrid per utterance with a "words" and a "phones" tier (for several speakers:
"<speaker> - words"). Empty intervals and MFA's silence and unknown marks are pauses, not words.
"""

from __future__ import annotations

from pathlib import Path

SILENCE_LABELS = frozenset({"", "sil", "sp", "spn", "<eps>", "<sil>", "<unk>"})


class TextGridError(ValueError):
    """A TextGrid that cannot give word timings."""


def _words_tier(grid):
    names = list(grid.tierNames)
    for name in names:
        if name.lower() == "words" or name.lower().endswith(" - words"):
            return grid.getTier(name)
    if len(names) == 1:
        return grid.getTier(names[0])
    raise TextGridError(f"no words tier (tiers: {', '.join(names)})")


def read_words(path: str | Path, duration: float, tolerance: float = 0.05) -> list[dict]:
    """[{"word", "start", "end"}] in seconds; TextGridError when the file is unreadable, has no words
    tier, or its times do not fit in `duration` seconds of audio."""
    from praatio import textgrid

    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    except Exception as e:  # praatio raises many types for a malformed file
        raise TextGridError(f"unreadable TextGrid ({type(e).__name__})") from None
    tier = _words_tier(grid)
    words = [{"word": label.strip().lower(), "start": round(float(start), 3), "end": round(float(end), 3)}
             for start, end, label in tier.entries if label.strip().lower() not in SILENCE_LABELS]
    if not words:
        raise TextGridError("the words tier is empty")
    if words[-1]["end"] > duration + tolerance:
        raise TextGridError(f"words end at {words[-1]['end']:.2f} s in {duration:.2f} s of audio")
    if any(b["start"] < a["end"] - 1e-3 for a, b in zip(words, words[1:])):
        raise TextGridError("words overlap")
    return words
