"""Task functions: waveforms in, waveforms out (no file I/O here).

audio (codec rate) -> codec.encode -> prompts (task layout) -> engine (AR, then NAR) -> codec.decode.

Long inputs of the known-length tasks (denoise, remove-speech, extract-speaker) are cut into
overlapping windows no longer than the model was trained on, generated as one batch, and joined
with linear crossfades over the overlaps. Each window's output is, by default, its input with the
generated audio's band energies applied as gains (mask.py); `Resynth.CODEC` keeps the codec's waveform.
With `speech_free`, remove-speech gives the model the input's own codes in the frames where it finds no
speech: by the checkpoint's detector, or by denoise draws generated first; with `noise_free`, denoise in
the frames where its detector finds no noise (speechfree.py). The options: window_options.py.

Word-level editing (`edit_words`): diff the transcripts, align the input's words and plan one step per
changed group of words (editplan.py), then run the steps right to left (`edit_steps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from . import editplan as E
from . import mask as M
from . import prompts as P
from . import speechfree as S
from . import text as T
from .audio import CROSSFADE_SECONDS, splice
from .checkpoint import SpeechX
from .detector import FrameDetector
from .engine import DecodingOptions, generate
from .mask import Resynth
from .prompts import Task
from .window_options import COUNTERPARTS, TASK_MASKS, WindowOptions
from .windows import WindowJoiner, split_windows

SECONDS_PER_PHONEME = 0.25  # generous speaking-rate bound for the TTS/edit frame limit
MIN_GENERATION_SECONDS = 1.0
SENTENCE_PAUSE_SECONDS = 0.25  # silence between the sentences of a long TTS text
SEARCH_FRAMES = 25  # frames of C(post) matched to find where the new middle ends


@dataclass(frozen=True)
class Request:
    """One task on waveforms at the codec's sample rate (float32 mono)."""

    task: Task
    audio: np.ndarray | None = None  # ns/sr/tse mixture, edit input
    enrollment: np.ndarray | None = None  # tse enrollment, tts voice prompt
    text: str | None = None  # tts/edit: required; ns/sr/tse: optional transcript
    span: tuple[float, float] | None = None  # edit: seconds of the input to replace

    def validate(self) -> "Request":
        needs_audio = self.task is not Task.TTS
        if needs_audio and (self.audio is None or len(self.audio) == 0):
            raise ValueError(f"{self.task.value}: empty input audio")
        if self.task in (Task.TTS, Task.TSE) and (self.enrollment is None or len(self.enrollment) == 0):
            raise ValueError(f"{self.task.value}: an enrollment/prompt recording is required")
        if self.task in (Task.TTS, Task.EDIT_CLEAN, Task.EDIT_NOISY) and not (self.text or "").strip():
            raise ValueError(f"{self.task.value}: text is required")
        if self.task in (Task.EDIT_CLEAN, Task.EDIT_NOISY):
            if self.span is None:
                raise ValueError("edit: a span START:END is required")
            start, end = self.span
            if not 0 <= start <= end:
                raise ValueError(f"edit: bad span {start:g}:{end:g} (need 0 <= START <= END)")
        return self


def to_codes(sx: SpeechX, audio: np.ndarray) -> torch.Tensor:
    """(N,) waveform -> (F, K) codes."""
    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(sx.device)
    return sx.codec.encode(wav)[0].T.cpu()


def to_audio(sx: SpeechX, codes: torch.Tensor) -> np.ndarray:
    """(F, K) codes -> (F * hop,) waveform."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.float32)
    wav = sx.codec.decode(codes.T[None].to(sx.device))[0]
    return wav.float().cpu().numpy()


def text_ids(text: str | None) -> torch.Tensor | None:
    if text is None or not text.strip():
        return None
    return torch.tensor(T.encode(text), dtype=torch.long)


@dataclass
class _Row:
    """One prompt of the batch and how its output maps back to its request."""

    request: int
    prompt: P.Prompt
    max_frames: int | None = None
    source: np.ndarray | None = None  # ns/sr/tse: the input window this row covers
    source_codes: torch.Tensor | None = None  # ns/sr/tse: its codes, (F, K)
    post: torch.Tensor | None = None  # edit: C(post), (Q, K)
    counterpart: P.Prompt | None = None  # ns/sr with a counterpart mask: the window's prompt of the other task
    enroll: torch.Tensor | None = None  # tse: the enrollment's codes (a later pass builds its prompt anew)
    enroll_audio: np.ndarray | None = None  # tse: the enrollment's waveform (its target-alone detector reads it)
    text: torch.Tensor | None = None  # ns/sr/tse: the transcript's ids, if the window carries one


def _edit_frames(sx: SpeechX, req: Request, n_frames: int) -> tuple[int, int]:
    fr = sx.codec.frame_rate
    start, end = req.span
    duration = n_frames / fr
    if end > duration + 1.0 / fr:
        raise ValueError(f"edit: span {start:g}:{end:g} s goes beyond the audio ({duration:.2f} s)")
    return int(math.floor(start * fr)), min(n_frames, int(math.ceil(end * fr)))


def _rows(sx: SpeechX, i: int, req: Request, win: WindowOptions, voices: dict[int, torch.Tensor]) -> list[_Row]:
    """voices: codes of enrollments already encoded in this run, by array identity (a folder run
    gives every file the same enrollment array)."""
    v, fr = sx.config.codebook_size, sx.codec.frame_rate
    if req.task in (Task.TTS, Task.TSE) and id(req.enrollment) not in voices:
        voices[id(req.enrollment)] = to_codes(sx, req.enrollment)
    if req.task is Task.TTS:  # one row per sentence, every one with the same voice prompt
        voice = voices[id(req.enrollment)]
        rows = []
        for sentence in T.sentences(req.text):
            ids = text_ids(sentence)
            limit = max(MIN_GENERATION_SECONDS, SECONDS_PER_PHONEME * len(ids)) * fr
            rows.append(_Row(i, P.tts(ids, voice, v), int(limit)))
        return rows
    text = text_ids(req.text)
    if req.task in (Task.EDIT_CLEAN, Task.EDIT_NOISY):
        codes = to_codes(sx, req.audio)
        a, b = _edit_frames(sx, req, len(codes))
        middle = codes[a:b] if req.task is Task.EDIT_NOISY else None
        prompt = P.edit(text, codes[:a], codes[b:], v, middle=middle)
        new = max(2 * (b - a), SECONDS_PER_PHONEME * len(text) * fr - a, MIN_GENERATION_SECONDS * fr)
        return [_Row(i, prompt, int(len(codes) - b + new), post=codes[b:])]
    sr = sx.codec.sample_rate
    windows = list(split_windows([req.audio], int(win.seconds * sr), int(win.overlap * sr)))
    # a transcript belongs to the whole file: only a single window may carry it
    t = text if len(windows) == 1 else None
    enroll = voices[id(req.enrollment)] if req.task is Task.TSE else None
    return [window_row(sx, i, req.task, w, enroll, t, _counterpart(req.task, win),
                       req.enrollment if req.task is Task.TSE else None) for w in windows]


def _counterpart(task: Task, window: WindowOptions) -> Task | None:
    """The task whose draws a window's mask also needs (None: the mask compares with the input)."""
    opts = window.mask or TASK_MASKS.get(task)
    if window.resynth is not Resynth.MASK or opts is None or not opts.counterpart:
        return None
    if task not in COUNTERPARTS:
        raise ValueError(f"mask: {task.value} has no counterpart task (only denoise and remove-speech do)")
    return COUNTERPARTS[task]


def window_row(sx: SpeechX, i: int, task: Task, audio: np.ndarray, enroll: torch.Tensor | None,
                text: torch.Tensor | None, counterpart: Task | None = None,
                enroll_audio: np.ndarray | None = None) -> _Row:
    """The row of one window of a known-length task (with the counterpart task's prompt of it; tse: the
    enrollment's codes, and its waveform for the target-alone detector)."""
    v, mix = sx.config.codebook_size, to_codes(sx, audio)

    def prompt(t: Task) -> P.Prompt:
        if t is Task.NS:
            return P.ns(mix, v, text=text)
        if t is Task.SR:
            return P.sr(mix, v, text=text)
        return P.tse(enroll, mix, v, text=text)
    return _Row(i, prompt(task), source=audio, source_codes=mix,
                counterpart=None if counterpart is None else prompt(counterpart), enroll=enroll,
                enroll_audio=enroll_audio, text=text)


def _find_post(generated: torch.Tensor, post: torch.Tensor, start: int) -> int:
    """Frame of `generated` (codebook 1) where the model's copy of C(post) begins.

    The AR model re-generates the untouched tail after the new words; the best match of the
    first frames of C(post) marks where the new middle ends. With no convincing match the tail
    is assumed to be as long as C(post).
    """
    fallback = max(start, len(generated) - len(post))
    n = min(SEARCH_FRAMES, len(post))
    if n == 0:
        return len(generated)
    best, best_score = fallback, 0.0
    for b in range(start, len(generated) - n + 1):
        score = float((generated[b: b + n] == post[:n]).float().mean())
        if score > best_score or (score == best_score and abs(b - fallback) < abs(best - fallback)):
            best, best_score = b, score
    return best if best_score >= 0.5 else fallback


def _finish(sx: SpeechX, req: Request, rows: list[_Row], outs: list[list[torch.Tensor]],
            window: WindowOptions) -> np.ndarray:
    """The request's waveform from its rows' outputs (each row's draws; tts and edit rows have one)."""
    hop = sx.codec.hop_length
    if req.task is Task.TTS:
        pause = np.zeros(int(SENTENCE_PAUSE_SECONDS * sx.codec.sample_rate), dtype=np.float32)
        parts = [to_audio(sx, o[0]) for o in outs]
        return np.concatenate([x for part in parts for x in (part, pause)][:-1])
    if req.task in (Task.EDIT_CLEAN, Task.EDIT_NOISY):
        row, out = rows[0], outs[0][0]
        a, post = len(row.prompt.prefix), row.post
        mid_end = _find_post(out[:, 0], post[:, 0], a)
        middle = to_audio(sx, out)[a * hop: mid_end * hop]
        n = len(req.audio)
        start = min(n, a * hop)
        end = max(start, min(n, (sx.codec.frames_for(n) - len(post)) * hop))
        fade = int(CROSSFADE_SECONDS * sx.codec.sample_rate)
        return splice(req.audio, middle, start, end, fade)
    joiner = WindowJoiner(_overlap_samples(sx, window))
    parts = [joiner.push(window_output(sx, req.task, r, o, window)) for r, o in zip(rows, outs)]
    return np.concatenate(parts + [joiner.finish()])


def window_output(sx: SpeechX, task: Task, row: _Row, draws: list[torch.Tensor], window: WindowOptions) -> np.ndarray:
    """One window's output, as long as its input window, from the codes of its draws (its own, then as
    many of the counterpart task's when the row has one)."""
    n = len(row.source)
    wavs = [to_audio(sx, codes)[:n] for codes in draws]
    if window.resynth is Resynth.CODEC:
        return wavs[0]
    opts, share = window.mask or TASK_MASKS[task], _share(sx, task, row, window)
    if row.counterpart is not None:
        k = len(wavs) // 2
        return M.apply(row.source, wavs[:k], sx.codec.sample_rate, opts, counterpart=wavs[k:], share=share)
    reference = to_audio(sx, row.source_codes)[:n] if opts.codec_reference else None
    return M.apply(row.source, wavs, sx.codec.sample_rate, opts, reference, share=share)


def _share(sx: SpeechX, task: Task, row: _Row, window: WindowOptions) -> M.Share | None:
    """The band shares the checkpoint's share detector of the task (extract-speaker's target share) gives the
    window, with their weight in the mask (None: the task has none, or it is off)."""
    for kind in (k for k in S.SHARES if S.TASK_OF[k] is task):
        how = window.given_frames(kind)
        if how.resolve(kind in sx.detectors).mode == "off":
            continue
        det = _detector(sx, kind)
        values = det.probabilities(row.source, len(row.source_codes), row.enroll_audio).numpy()
        return M.Share(values, det.cfg.hop_length, S.SHARE_WEIGHT[kind] if how.value is None else how.value)
    return None


def _next_passes(sx: SpeechX, rows: list[_Row], outs: list[list[torch.Tensor]], opts: DecodingOptions,
                 window: WindowOptions) -> tuple[list[_Row], list[list[torch.Tensor]]]:
    """Passes 2.. of the known-length rows: each window's output becomes that window's input, and its
    rows and draws replace the previous pass's (the windows are joined after the last pass)."""
    rows, outs = list(rows), list(outs)
    passes = {j: window.n_passes(r.prompt.task, sx.detectors) for j, r in enumerate(rows)
              if r.source is not None}
    for k in range(1, max(passes.values(), default=1)):
        again = [j for j, n in passes.items() if n > k]
        new = [window_row(sx, rows[j].request, rows[j].prompt.task,
                          window_output(sx, rows[j].prompt.task, rows[j], outs[j], window), rows[j].enroll,
                          rows[j].text, None if rows[j].counterpart is None else rows[j].counterpart.task,
                          rows[j].enroll_audio)
               for j in again]
        for j, row, out in zip(again, new, _generate_windows(sx, new, opts, window)):
            rows[j], outs[j] = row, out
    return rows, outs


def _overlap_samples(sx: SpeechX, window: WindowOptions) -> int:
    return int(window.overlap * sx.codec.sample_rate)


def run(sx: SpeechX, requests: list[Request], opts: DecodingOptions,
        window: WindowOptions = WindowOptions()) -> list[np.ndarray]:
    """Run several requests as batches of prompts; one waveform (codec rate) per request."""
    opts.validate()
    window.validate()
    rows: list[_Row] = []
    voices: dict[int, torch.Tensor] = {}  # the requests keep their arrays alive: ids stay unique
    for i, req in enumerate(requests):
        rows.extend(_rows(sx, i, req.validate(), window, voices))
    outs = _generate_windows(sx, rows, opts, window)
    rows, outs = _next_passes(sx, rows, outs, opts, window)
    results = []
    for i, req in enumerate(requests):
        mine = [(r, o) for r, o in zip(rows, outs) if r.request == i]
        results.append(_finish(sx, req, [r for r, _ in mine], [o for _, o in mine], window))
    return results


def _generate_windows(sx: SpeechX, rows: list[_Row], opts: DecodingOptions,
                      window: WindowOptions) -> list[list[torch.Tensor]]:
    """_generate_rows with the window options' draws, remove-speech's and denoise's windows with their
    speech-free and noise-free frames given."""
    rows, known = _given_rows(sx, rows, opts, window)
    return _generate_rows(sx, rows, opts, window.batch_size, window.n_draws, known)


def _given_rows(sx: SpeechX, rows: list[_Row], opts: DecodingOptions, window: WindowOptions
                ) -> tuple[list[_Row], dict[int, list[torch.Tensor]]]:
    """The rows, each remove-speech window's prompt giving its input's codes in its speech-free frames, each
    denoise window's in its noise-free frames, each extract-speaker window's in its target-alone frames and the
    codes of silence in its target-silent ones (speechfree.py): found by the checkpoint's detector of the kind
    (tse's read the enrollment),
    or (remove-speech) by the windows' denoise draws, generated first (as many as the window's own). With
    the draws: those of the rows whose counterpart is that same denoise prompt (`--mask counterpart=yes`),
    by row, so that they are not generated twice."""
    rows, known = list(rows), {}
    for kind, task in S.TASK_OF.items():  # the kinds of given frames, in order: a frame given keeps its codes
        if kind in S.SHARES:  # band shares for the mask (window_output), not frames
            continue
        how = window.given_frames(kind)
        todo = [j for j, r in enumerate(rows) if r.prompt.task is task and r.source is not None]
        mode = how.resolve(kind in sx.detectors).mode
        if mode == "off" or not todo:
            continue
        if mode == "detector":
            found = [_detector(sx, kind).pick(rows[j].source, len(rows[j].source_codes), how.value,
                                              rows[j].enroll_audio) for j in todo]
        else:
            found, known = _denoise_draws_frames(sx, rows, todo, opts, window)
        for j, picked in zip(todo, found):
            rows[j] = _give(sx, rows[j], picked, silence=kind in S.SILENCE)
    return rows, known


def _detector(sx: SpeechX, kind: str) -> FrameDetector:
    """The checkpoint's detector of `kind` (speechfree.KINDS); ValueError naming the flag where it has none."""
    if kind not in sx.detectors:
        raise ValueError(f"{S.FLAGS[kind]} detector: this checkpoint has no {S.KINDS[kind]} detector")
    return sx.detectors[kind]


def _give(sx: SpeechX, row: _Row, picked: torch.Tensor, silence: bool) -> _Row:
    """The row with the picked frames given (those not given already): the input's own codes, or the codes of
    silence."""
    frames = len(row.source_codes)
    before = torch.zeros(frames, dtype=torch.bool) if row.prompt.given is None else row.prompt.given
    prefix = row.source_codes if row.prompt.given is None else row.prompt.prefix
    new = picked & ~before
    codes = row.source_codes
    if silence:  # the codec's codes of silence
        codes = to_codes(sx, np.zeros(frames * sx.codec.hop_length, dtype=np.float32))[:frames]
    return replace(row, prompt=replace(row.prompt, prefix=torch.where(new[:, None], codes, prefix), given=before | new))


def _denoise_draws_frames(sx: SpeechX, rows: list[_Row], todo: list[int], opts: DecodingOptions,
                          window: WindowOptions) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor]]]:
    """remove-speech's speech-free frames where its windows' denoise draws are `--speech-free denoise=DB`
    under the input, and those draws by row where they are the row's counterpart's."""
    v, hop = sx.config.codebook_size, sx.codec.hop_length
    denoise = [_Row(rows[j].request, P.ns(rows[j].source_codes, v, text=rows[j].text), source=rows[j].source)
               for j in todo]
    drawn = _generate_rows(sx, denoise, opts, window.batch_size, window.n_draws)
    found = [S.speech_free(rows[j].source, [to_audio(sx, c) for c in draws], hop, len(rows[j].source_codes),
                           window.speech_free.db) for j, draws in zip(todo, drawn)]
    # a draw's samples depend on its seed and prompt only (engine.row_generators): these are the draws
    # the counterpart would get
    return found, {j: draws for j, d, draws in zip(todo, denoise, drawn)
                   if rows[j].counterpart is not None and _same_prompt(rows[j].counterpart, d.prompt)}


def _same_prompt(a: P.Prompt, b: P.Prompt) -> bool:
    return (a.task is b.task and a.out_frames == b.out_frames and a.given is None and b.given is None
            and torch.equal(a.tokens, b.tokens) and torch.equal(a.prefix, b.prefix))


def _generate_rows(sx: SpeechX, rows: list[_Row], opts: DecodingOptions, batch_size: int,
                   draws: int = 1, known: dict[int, list[torch.Tensor]] | None = None) -> list[list[torch.Tensor]]:
    """Generate every row, batch_size prompts at a time, bucketed by condition length (less padding):
    each row's codes, `draws` times for a window of a known-length task (then `draws` codes of its
    counterpart prompt, if it has one, unless `known` holds them by row), once for tts and edit rows.

    A prompt's draws always decode in one batch (one larger than batch_size when draws exceed it): a row's
    random stream is its seed, its condition and its copy number in the batch (engine.row_generators), so
    copies in two batches would draw the same samples twice."""
    size = max(batch_size, draws)
    units = [(j, rows[j].prompt) for j in range(len(rows))]
    known = known or {}
    units += [(j, rows[j].counterpart) for j in range(len(rows))
              if rows[j].counterpart is not None and j not in known]
    got: dict[tuple[int, int], list[torch.Tensor]] = {(j, 1): list(c) for j, c in known.items()}
    chunk: list[tuple[int, int]] = []  # (unit, row) per prompt of the batch

    def flush() -> None:
        codes = generate(sx.ar, sx.nar, [units[u][1] for u, _ in chunk], opts, sx.codec.frame_rate,
                         [rows[j].max_frames for _, j in chunk])
        for (u, j), o in zip(chunk, codes):
            got.setdefault((j, int(u >= len(rows))), []).append(o)
        chunk.clear()

    for u in sorted(range(len(units)), key=lambda u: len(units[u][1].tokens)):
        j = units[u][0]
        n = draws if rows[j].source is not None else 1
        if chunk and len(chunk) + n > size:
            flush()
        chunk.extend([(u, j)] * n)
    if chunk:
        flush()
    return [got[j, 0] + got.get((j, 1), []) for j in range(len(rows))]


def stream(sx: SpeechX, task: Task, blocks: Iterable[np.ndarray], opts: DecodingOptions,
           window: WindowOptions = WindowOptions(), enrollment: np.ndarray | None = None
           ) -> Iterator[np.ndarray]:
    """Known-length task over an endless input: windows in, output blocks out, in bounded memory.

    Holds at most `batch_size` windows at once; the enrollment (tse) is the same for every window.
    """
    if not task.known_length:
        raise ValueError(f"{task.value} cannot stream: its output length is not its input's")
    opts.validate()
    window.validate()
    sr = sx.codec.sample_rate
    enroll = to_codes(sx, enrollment) if task is Task.TSE else None
    counterpart = _counterpart(task, window)
    joiner = WindowJoiner(_overlap_samples(sx, window))
    pending: list[np.ndarray] = []

    def flush() -> Iterator[np.ndarray]:
        rows = [window_row(sx, 0, task, w, enroll, None, counterpart, enrollment) for w in pending]
        outs = _generate_windows(sx, rows, opts, window)
        for r, o in zip(*_next_passes(sx, rows, outs, opts, window)):
            yield joiner.push(window_output(sx, task, r, o, window))
        pending.clear()

    for w in split_windows(blocks, int(window.seconds * sr), int(window.overlap * sr)):
        pending.append(w)
        if len(pending) == window.batch_size:
            yield from flush()
    yield from flush()
    yield joiner.finish()


def _one(sx: SpeechX, req: Request, opts: DecodingOptions, window: WindowOptions) -> np.ndarray:
    return run(sx, [req], opts, window)[0]


def denoise(sx, audio, opts=DecodingOptions(), text=None, window=WindowOptions()) -> np.ndarray:
    return _one(sx, Request(Task.NS, audio=audio, text=text), opts, window)


def remove_speech(sx, audio, opts=DecodingOptions(), text=None, window=WindowOptions()) -> np.ndarray:
    return _one(sx, Request(Task.SR, audio=audio, text=text), opts, window)


def extract_speaker(sx, mixture, enrollment, opts=DecodingOptions(), text=None,
                    window=WindowOptions()) -> np.ndarray:
    return _one(sx, Request(Task.TSE, audio=mixture, enrollment=enrollment, text=text), opts, window)


def tts(sx, text, prompt, opts=DecodingOptions()) -> np.ndarray:
    return _one(sx, Request(Task.TTS, enrollment=prompt, text=text), opts, WindowOptions())


def edit_task(background: str) -> Task:
    """keep: noisy speech editing (the new words keep the recording's background); clean: clean speech."""
    if background not in ("keep", "clean"):
        raise ValueError(f"background {background!r}: choose keep or clean")
    return Task.EDIT_NOISY if background == "keep" else Task.EDIT_CLEAN


def edit(sx, audio, text, span, background="keep", opts=DecodingOptions()) -> np.ndarray:
    return _one(sx, Request(edit_task(background), audio=audio, text=text, span=span), opts, WindowOptions())


def edit_steps(sx: SpeechX, audio: np.ndarray, steps: Sequence[E.EditStep], opts: DecodingOptions = DecodingOptions(),
               background: str = "keep", on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Run edit steps (editplan.py) on `audio` at the codec's rate, the last first: an edit changes the
    audio only from its span on, so the spans to its left keep their times. on_step(k, n) before step k."""
    task = edit_task(background)
    for k in range(len(steps), 0, -1):
        if on_step is not None:
            on_step(k, len(steps))
        step = steps[k - 1]
        audio = run(sx, [Request(task, audio=audio, text=step.text, span=step.span)], opts)[0]
    return audio


def edit_words(sx: SpeechX, audio: np.ndarray, transcript: str, text: str, opts: DecodingOptions = DecodingOptions(),
               background: str = "keep") -> tuple[np.ndarray, list[E.EditStep]]:
    """Make `audio` (codec rate), which says `transcript`, say `text`: only the changed words are
    regenerated, everything else stays the input. Also returns the steps run (left to right)."""
    steps = E.word_steps(audio, sx.codec.sample_rate, transcript, text)
    return edit_steps(sx, audio, steps, opts, background), steps
