"""What audio.py and its FFmpeg backend (media.py) both say about a file: its header (`AudioInfo`) and
the one error for a file that cannot be used (`AudioError`). Its own module so that media.py need not
import audio.py, which calls media.py; callers use them as audio.AudioError and audio.AudioInfo.
"""

from __future__ import annotations

from dataclasses import dataclass


class AudioError(Exception):
    """A problem with an audio file, worded for the user: '<file>: <what is wrong>'."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int  # Hz
    channels: int
    frames: int  # samples per channel
    duration_s: float
