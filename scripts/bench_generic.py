"""Figures for the generic expression model (issue 10): speakers it never heard, silence, peer, speed.

    python scripts/bench_generic.py [--cache DIR] [--model MODEL] [--folds 5] [--steps 1000] [--linear]
                                    [--no-pylipsync] [--json OUT]

Clips: ../shared/data/corpus (speakers from its MANIFEST.tsv) and ../shared/data/video, their captured
blendshapes and audio features cached in --cache (made on first use, about as long as the clips play).

1. Speaker-disjoint cross-validation (the product's training, `train-generic`, per fold): per speaker
   the model never heard, its weights as shipped against the blendshapes MediaPipe captures from the
   speaker's own video: jawOpen r at lag 0 (and best within +-4 frames), jawOpen spread (prediction /
   capture on the same ARKit scale), mean r of the mouth and jaw curves that move in the capture, and
   the r of the lip-closing (mouthClose, mouthPress) and lip-rounding (mouthFunnel, mouthPucker) curves;
   the jaw and mouth r again on the speakers of LRS2 and GRID, whose footage is in sync by construction
   (much of the rest is a few frames off: dubbed, generated or re-encoded clips).
   With --linear, the previous architecture (a linear window, ridge regression) on the same folds.
2. Pauses: mean jawOpen where the voice-activity detector finds no voice / where it finds voice.
3. Room tone: 3 s of noise at -60 dBFS RMS (white, and pink) through `--model` (default: the bundled
   model): the largest jawOpen.
4. Peer: pylipsync (uLipSync's MFCC vowel templates; not a dependency of the engine: install it and
   librosa, which it reads audio with, for this script only, into a folder of their own so that they
   leave the venv's numpy alone, and put that folder on PYTHONPATH:
   `.venv/bin/python -m pip install --no-deps --target DIR pylipsync==0.2.1 librosa==0.10.2.post1
   lazy_loader==0.4 audioread==3.0.1 decorator==5.1.1 joblib==1.4.2 numba==0.60.0 llvmlite==0.43.0
   pooch==1.8.2 msgpack==1.1.0 platformdirs==4.3.6 scikit-learn==1.5.2 threadpoolctl==3.5.0`),
   jawOpen = its vowel weights (aa 1, oh 0.7, ih/ee/ou 0.4), scored like ours on the same clips.
5. Speed: 60 s of speech (../shared/data/audio/en_60s.wav) to curves with `--model`, load apart.
6. The generic model as a subject's prior (engine.expression.training): on each clip of 10 s or more, a
   subject's model fitted on its first 80 % and scored on the rest, without and with the prior (the
   cross-validation's output for that clip, from a model that never heard the speaker): jawOpen r and
   the mean r of the mouth curves that move, mean over the clips.
7. Bilabials: at the onsets of words beginning with b, p or m (Whisper's word times: its greedy transcript of
   each clip's first 30 s aligned by cross-attention), the jaw of the shipped weights and of the capture, and
   the lips' closing curves, against the onsets of the other words.
Timings are wall clock on whatever machine runs it; say how loaded it was when you quote them.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
os.environ.setdefault("SYNCTALK_MODELS", str(SHARED / "models"))

import numpy as np  # noqa: E402

from engine.arkit import ARKIT_INDEX  # noqa: E402
from engine.progress import Progress  # noqa: E402

JAW = ARKIT_INDEX["jawOpen"]
LIP_CURVES = {"closing": ("mouthClose", "mouthPressLeft", "mouthPressRight"),
              "rounding": ("mouthFunnel", "mouthPucker")}
LINEAR_RIDGE = 30000.0  # the strength the previous bundled linear model chose by cross-validation
PEER_JAW = {"aa": 1.0, "oh": 0.7, "ih": 0.4, "ee": 0.4, "ou": 0.4}
# Speakers (MANIFEST.tsv's names) from the corpus' two sources whose sound and picture agree by construction:
# LRS2 keeps only the broadcast clips SyncNet finds in sync, GRID was recorded in a studio, both together.
# Chosen by source, not by how well the model follows them: the fair view of footage that is in sync.
SYNC_ASSURED = ("LRS2_", "GRID_")


def load_clips(cache: Path):
    from engine.audio.features import get_encoder
    from engine.expression.corpus import SPEEDS, find_clips, load_clip
    from engine.expression.generic import GENERIC_ENCODER, usable
    encoder = get_encoder(GENERIC_ENCODER)
    sources = find_clips([SHARED / "data" / "corpus", SHARED / "data" / "video"])
    started = time.monotonic()
    clips = [load_clip(s, encoder, cache_dir=cache, speeds=SPEEDS) for s in sources]
    print(f"clips: {len(clips)} ({len({s.speaker for s in sources})} speakers), "
          f"{sum(len(c.inputs) for c in clips)} frames, loaded/captured in {time.monotonic() - started:.0f} s")
    return encoder, sources, usable(clips)


def cross_validation(clips, encoder, folds: int, steps: int) -> tuple[dict, list, list]:
    from engine.expression.generic import calibration, cross_validate, score_speakers, speaker_ranges, summarise
    from engine.expression.model import ExpressionConfig
    config = ExpressionConfig(encoder=encoder.name, dim=encoder.dim, fps=clips[0].fps, window=0, lead=0,
                              arch="temporal")
    started = time.monotonic()
    outputs, weights = cross_validate(clips, config, folds, steps, Progress("quiet"))
    ranges = speaker_ranges(clips)
    mapping = calibration(clips, ranges, outputs)
    per_speaker = score_speakers(clips, weights, ranges, mapping)
    summary = summarise(per_speaker)
    summary["sync_assured"] = summarise({k: v for k, v in per_speaker.items() if k.startswith(SYNC_ASSURED)})
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary.update(lip_curves(clips, weights))
    summary["raw"] = scale_free_scores(clips, outputs)
    return summary, weights, outputs


def subject_prior(clips, outputs, sources, cache: Path, min_frames: int = 250) -> dict:
    """Subjects' own models (the product's fit) on their first 80 %, scored on the rest, without and with
    the prior; each clip's prior is its cross-validation output, read as late as its picture trails."""
    from dataclasses import asdict
    from engine.audio.features import DEFAULT_ENCODER, get_encoder
    from engine.expression.corpus import load_clip
    from engine.expression.generic import MOUTH, best_sync, load_generic_model
    from engine.expression.model import ExpressionConfig
    from engine.expression.predict import model_windows, predict_weights
    from engine.expression.training import fit
    encoder = get_encoder(DEFAULT_ENCODER)
    prior = asdict(load_generic_model().config)
    by_name = {s.path.stem: s for s in sources}
    rows = {"own": [], "prior": []}
    for clip, output in zip(clips, outputs):
        n = len(clip.inputs)
        if n < min_frames:
            continue
        own = load_clip(by_name[clip.name], encoder, cache_dir=cache).inputs  # the subject model's encoder
        truth, cut = clip.blendshapes, int(n * 0.8)
        train, test = np.flatnonzero(clip.valid[:cut]), cut + np.flatnonzero(clip.valid[cut:])
        fitted = np.zeros(n, bool)
        fitted[train] = True
        lag = best_sync(output[:, JAW], truth[:, JAW], fitted).lag
        late = output[np.clip(np.arange(n) - lag, 0, n - 1)]
        for name, per_frame, config in (
                ("own", own, ExpressionConfig(encoder=encoder.name, dim=encoder.dim)),
                ("prior", np.concatenate([own[:, :-1], late, own[:, -1:]], axis=1),
                 ExpressionConfig(encoder=encoder.name, dim=encoder.dim, prior=prior, prior_lag=lag))):
            per_frame = per_frame.astype(np.float32)
            model = fit(model_windows(per_frame, config.window, config.lead), truth, train, config, Progress("quiet"))
            predicted, captured = predict_weights(model, per_frame, clip.activity)[test], truth[test]
            moving = [i for i in MOUTH if captured[:, i].std() > 0.02]
            rows[name].append((_r(predicted[:, JAW], captured[:, JAW]),
                               np.mean([_r(predicted[:, i], captured[:, i]) for i in moving])))
    return {name: {"clips": len(values), "jaw_open_r_mean": round(float(np.mean([v[0] for v in values])), 3),
                   "mouth_r_mean": round(float(np.mean([v[1] for v in values])), 3)} for name, values in rows.items()}


def lip_curves(clips, weights) -> dict:
    """Mean r per speaker-clip of the lip-closing and rounding curves, and how much higher each is
    predicted where the capture has it high (its top 10 % of frames) than elsewhere."""
    out = {}
    for group, names in LIP_CURVES.items():
        rs, lifts = [], []
        for name in names:
            i = ARKIT_INDEX[name]
            for clip, w in zip(clips, weights):
                truth, predicted = clip.blendshapes[clip.valid, i], w[clip.valid, i]
                if truth.std() < 0.01 or predicted.std() < 1e-6:
                    continue
                rs.append(np.corrcoef(truth, predicted)[0, 1])
                top = truth >= np.percentile(truth, 90)
                lifts.append(predicted[top].mean() - predicted[~top].mean())
        out[f"{group}_r"] = round(float(np.mean(rs)), 3) if rs else None
        out[f"{group}_lift"] = round(float(np.mean(lifts)), 4) if lifts else None
    return out


def linear_baseline(clips, encoder, folds: int) -> dict:
    """The previous model (a linear window fitted by ridge regression, at the strength the previous bundled
    model chose) on the same speaker-disjoint folds, fitted to the same per-speaker normalised targets;
    scored by jawOpen r and mouth r (scale-free), ungated."""
    from engine.expression.generic import speaker_folds, speaker_ranges
    from engine.expression.model import ExpressionConfig
    from engine.expression.predict import model_windows
    from engine.expression.training import fit
    config = ExpressionConfig(encoder=encoder.name, dim=encoder.dim, fps=clips[0].fps)
    ranges = speaker_ranges(clips)
    started = time.monotonic()
    windows = [model_windows(c.inputs, config.window, config.lead) for c in clips]
    outputs = [None] * len(clips)
    for test in speaker_folds(clips, folds):
        train = [k for k in range(len(clips)) if not test[k]]
        inputs = np.concatenate([windows[k] for k in train])
        targets = np.concatenate([ranges[clips[k].speaker].normalise(clips[k].blendshapes) for k in train])
        valid = np.flatnonzero(np.concatenate([clips[k].valid for k in train]))
        model = fit(inputs, targets, valid, config, Progress("quiet"), ridges=(LINEAR_RIDGE,))
        del inputs
        for k in np.flatnonzero(test):
            outputs[k] = model.predict(windows[k])
    return {**scale_free_scores(clips, outputs), "seconds": round(time.monotonic() - started, 1)}


def scale_free_scores(clips, outputs) -> dict:
    """Per speaker, jawOpen r and the mean r of the mouth curves that move, of a model's raw output
    (no silence gate, no output map): how two architectures compare on the same folds."""
    from engine.expression.generic import JAW as jaw, MOUTH
    per_speaker = {}
    for clip, w in zip(clips, outputs):
        per_speaker.setdefault(clip.speaker, []).append((clip.blendshapes[clip.valid], w[clip.valid]))
    jaw_r, mouth_r = [], []
    for items in per_speaker.values():
        truth, predicted = (np.concatenate(p) for p in zip(*items))
        jaw_r.append(_r(truth[:, jaw], predicted[:, jaw]))
        moving = [i for i in MOUTH if truth[:, i].std() > 0.02]
        if moving:
            mouth_r.append(np.mean([_r(truth[:, i], predicted[:, i]) for i in moving]))
    return {"jaw_open_r_mean": round(float(np.mean(jaw_r)), 3), "mouth_r_mean": round(float(np.mean(mouth_r)), 3)}


def pauses(clips, weights) -> dict:
    activity = np.concatenate([c.activity for c in clips])
    jaw = np.concatenate([w[:, JAW] for w in weights])
    captured = np.concatenate([c.blendshapes[:, JAW] for c in clips])
    pause, speech = activity < 0.01, activity > 0.99
    return {"pause_frames": int(pause.sum()), "speech_frames": int(speech.sum()),
            "ours_pause": round(float(jaw[pause].mean()), 4), "ours_speech": round(float(jaw[speech].mean()), 4),
            "ratio": round(float(jaw[pause].mean() / jaw[speech].mean()), 3),
            "capture_ratio": round(float(captured[pause].mean() / captured[speech].mean()), 3)}


def word_onsets(path: Path, model, vocabulary: list[str]) -> list[tuple[str, float]]:
    """(word, seconds) of each word Whisper hears in the clip's first 30 s, English speech only (none else): its
    tokens decoded greedily, then aligned to the sound by its cross-attention (CTranslate2's `align`, as word
    timestamps are made)."""
    import ctranslate2
    from engine.audio.whisper import WINDOW_SAMPLES, whisper_log_mel
    from engine.media.audio import load_audio
    samples = load_audio(path)[:WINDOW_SAMPLES]
    window = np.zeros(WINDOW_SAMPLES, np.float32)
    window[:len(samples)] = samples
    mel = ctranslate2.StorageView.from_array(whisper_log_mel(window)[None])
    if model.detect_language(mel)[0][0][0] != "<|en|>":
        return []   # a word's first letter stands for its first sound in English spelling only
    start = [vocabulary.index(name) for name in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>")]
    result = model.generate(mel, [start + [vocabulary.index("<|notimestamps|>")]], beam_size=1)[0]
    tokens = [t for t in result.sequences_ids[0] if t < vocabulary.index("<|endoftext|>")]   # text, not markers
    if not tokens:
        return []
    first_step = {}   # token's place in the transcript -> the first 20-ms encoder step aligned with it
    for index, step in model.align(mel, start, [tokens], len(samples) // 160)[0].alignments:
        first_step.setdefault(index, step)
    words = []
    for i, token in enumerate(tokens):
        piece = vocabulary[token]
        if piece.startswith("\u0120") or not words:   # GPT-2's byte-level space begins a word
            words.append([piece.lstrip("\u0120"), first_step.get(i)])
        else:
            words[-1][0] += piece
    return [(word.lower(), step * 0.02) for word, step in words if step is not None and word[:1].isalpha()]


def bilabials(clips, weights, sources) -> dict:
    """The curves around the onsets of words that begin with b, p or m (the lips close, then part) and of
    the other words, averaged over every onset with a face in the frames around it: prediction and capture."""
    import ctranslate2
    from engine.models import find_model
    folder = find_model("whisper-base")
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="int8")
    vocabulary = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    by_name = {s.path.stem: s.path for s in sources}
    around = np.arange(-6, 10)   # frames from the onset
    windows = {"bilabial": ([], []), "other": ([], [])}
    for clip, w in zip(clips, weights):
        for word, seconds in word_onsets(by_name[clip.name], model, vocabulary):
            frames = int(round(seconds * clip.fps)) + around
            if frames[0] < 0 or frames[-1] >= len(w) or not clip.valid[frames].all():
                continue
            predicted, captured = windows["bilabial" if word[0] in "bpm" else "other"]
            predicted.append(w[frames])
            captured.append(clip.blendshapes[frames])
    out = {}
    close, press = ARKIT_INDEX["mouthClose"], [ARKIT_INDEX["mouthPressLeft"], ARKIT_INDEX["mouthPressRight"]]
    near = np.flatnonzero(np.abs(around) <= 3)
    for kind, (predicted, captured) in windows.items():
        row = {"onsets": len(predicted)}
        for source, series in (("ours", predicted), ("capture", captured)):
            mean = np.mean(series, axis=0)
            low = near[np.argmin(mean[near, JAW])]
            row[source] = {"jaw_before": round(float(mean[0, JAW]), 3), "jaw_lowest": round(float(mean[low, JAW]), 3),
                           "lowest_at_frame": int(around[low]),
                           "close_at_lowest": round(float(mean[low, close]), 3),
                           "press_before": round(float(mean[0, press].mean()), 3),
                           "press_at_lowest": round(float(mean[low, press].mean()), 3)}
        out[kind] = row
    return out


def room_tone(animator) -> dict:
    rng = np.random.default_rng(0)
    white = rng.standard_normal(48000)
    spectrum = np.fft.rfft(rng.standard_normal(48000))
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)), 48000)
    out = {}
    for name, noise in (("white", white), ("pink", pink)):
        noise = (noise / np.sqrt(np.mean(noise ** 2)) * 10 ** (-60 / 20)).astype(np.float32)
        out[name] = round(float(animator(noise, 25.0, seed=0).weights[:, JAW].max()), 4)
    return out


def peer(clips, sources) -> dict:
    """pylipsync's jawOpen on the same clips, scored per speaker like ours (jawOpen r at lag 0)."""
    from pylipsync import PhonemeAnalyzer
    from engine.media.audio import load_audio
    analyzer = PhonemeAnalyzer()
    by_name = {s.path.stem: s.path for s in sources}
    per_speaker = {}
    started = time.monotonic()
    for clip in clips:
        samples = load_audio(by_name[clip.name])
        segments = analyzer.extract_phoneme_segments(samples, 16000, fps=int(round(clip.fps)))
        jaw = np.array([sum(PEER_JAW.get(p.name, 0.0) * p.target for p in s.phonemes) for s in segments])
        n = len(clip.blendshapes)
        jaw = np.concatenate([jaw, np.zeros(max(0, n - len(jaw)))])[:n]
        per_speaker.setdefault(clip.speaker, []).append((clip.blendshapes[clip.valid, JAW], jaw[clip.valid]))
    rs = [_r(*(np.concatenate(p) for p in zip(*items))) for items in per_speaker.values()]
    return {"jaw_open_r_mean": round(float(np.mean(rs)), 3), "speakers": len(rs),
            "seconds": round(time.monotonic() - started, 1)}


def speed(model_path) -> dict:
    from engine.expression.animate import Animator
    from engine.media.audio import load_audio
    started = time.monotonic()
    animator = Animator(generic=True, model_path=model_path)
    loaded = time.monotonic()
    samples = load_audio(SHARED / "data" / "audio" / "en_60s.wav")
    curves = animator(samples, 25.0, seed=0)
    done = time.monotonic()
    return {"load_s": round(loaded - started, 2), "animate_s": round(done - loaded, 2), "frames": len(curves),
            "animator": animator}


def _r(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-9 and b.std() > 1e-9 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=ROOT.parent / "cache" / "corpus")
    parser.add_argument("--model", type=Path, default=None, help="model for room tone and speed (default: bundled)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--linear", action="store_true", help="also the linear window model on the same folds")
    parser.add_argument("--no-pylipsync", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.no_pylipsync:
        try:  # checked first: the peer runs after minutes of cross-validation
            import pylipsync  # noqa: F401
        except ImportError as error:
            raise SystemExit(f"the peer needs pylipsync ({error}): install it as this script's docstring says, "
                             "or pass --no-pylipsync")
    import torch
    torch.set_num_threads(1)  # layers this small run fastest on one thread (two were several times slower)
    figures = {}
    encoder, sources, clips = load_clips(args.cache)
    figures["cross_validation"], weights, outputs = cross_validation(clips, encoder, args.folds, args.steps)
    figures["subject_prior"] = subject_prior(clips, outputs, sources, args.cache)
    figures["pauses"] = pauses(clips, weights)
    figures["bilabials"] = bilabials(clips, weights, sources)
    if args.linear:
        figures["linear"] = linear_baseline(clips, encoder, args.folds)
    if not args.no_pylipsync:
        figures["pylipsync"] = peer(clips, sources)
    timing = speed(args.model)
    animator = timing.pop("animator")
    figures["speed_60s"] = timing
    figures["room_tone_max_jaw"] = room_tone(animator)
    cv = figures["cross_validation"]
    print(json.dumps(figures, indent=1))
    print("\n| figure | target | measured |\n| --- | --- | --- |")
    print(f"| jawOpen r on unseen speakers, lag 0 (mean over {cv['speakers']} speakers) | >= 0.55 | "
          f"{cv['jaw_open_r_mean']:.3f} (best lag within +-4 frames: {cv['jaw_open_r_best_lag_mean']:.3f}) |")
    print(f"| the same on the {cv['in_sync_speakers']} speakers whose jaw follows best within a frame of lag 0 | | "
          f"{cv['jaw_open_r_in_sync_mean']:.3f} (the others' best lag is 2 to 4 frames off) |")
    assured = cv["sync_assured"]
    print(f"| jawOpen r / mouth r on the {assured['speakers']} speakers of the sources whose sync is assured "
          f"({', '.join(p.rstrip('_') for p in SYNC_ASSURED)}) | >= 0.55 / >= 0.4 | "
          f"{assured['jaw_open_r_mean']:.3f} / {assured['mouth_r_mean']:.3f} |")
    print(f"| jawOpen spread, prediction / capture (median over speakers) | 0.8 to 1.25 | {cv['jaw_spread_median']:.3f} |")
    print(f"| mouth curves that move in the capture: mean r | >= 0.4 | {cv['mouth_r_mean']:.3f} |")
    p = figures["pauses"]
    print(f"| jawOpen in pauses / in speech | <= 0.2 | {p['ratio']:.3f} ({p['ours_pause']:.4f} / {p['ours_speech']:.4f}; "
          f"the capture: {p['capture_ratio']:.3f}) |")
    rt = figures["room_tone_max_jaw"]
    print(f"| -60 dBFS room tone: max jawOpen | <= 0.02 | white {rt['white']:.4f}, pink {rt['pink']:.4f} |")
    if "pylipsync" in figures:
        peer_r = figures["pylipsync"]["jaw_open_r_mean"]
        ratio = f"{cv['jaw_open_r_mean'] / peer_r:.1f}x" if peer_r > 0 else "peer r <= 0"
        print(f"| ours / pylipsync jawOpen r, same clips | >= 3x | {ratio} ({cv['jaw_open_r_mean']:.3f} / {peer_r:.3f}) |")
    sp = figures["subject_prior"]
    print(f"| a subject's own model, last 20 % of {sp['own']['clips']} clips of 10 s or more: jawOpen r / mouth r, "
          f"without / with the prior | | {sp['own']['jaw_open_r_mean']:.3f} / {sp['own']['mouth_r_mean']:.3f} -> "
          f"{sp['prior']['jaw_open_r_mean']:.3f} / {sp['prior']['mouth_r_mean']:.3f} |")
    raw = cv["raw"]
    print(f"| raw output (no gate, no map), same folds: jawOpen r / mouth r | | temporal {raw['jaw_open_r_mean']:.3f} / "
          f"{raw['mouth_r_mean']:.3f}" + (f"; linear window {figures['linear']['jaw_open_r_mean']:.3f} / "
                                          f"{figures['linear']['mouth_r_mean']:.3f}" if "linear" in figures else "") + " |")
    print(f"| 60 s of speech to curves (engine, Animator) | | {timing['animate_s']:.2f} s after a {timing['load_s']:.2f} s load |")
    print(f"| lip closing (mouthClose, mouthPress) r / rounding (funnel, pucker) r | | {cv['closing_r']} / {cv['rounding_r']} |")
    b, o = figures["bilabials"]["bilabial"], figures["bilabials"]["other"]
    print(f"| b/p/m word onsets ({b['onsets']}; Whisper's word times): jawOpen 6 frames before -> lowest within 3 "
          f"frames, mouthClose there | lips close | ours {b['ours']['jaw_before']:.3f} -> {b['ours']['jaw_lowest']:.3f} "
          f"(frame {b['ours']['lowest_at_frame']:+d}), mouthClose {b['ours']['close_at_lowest']:.3f}, mouthPress "
          f"{b['ours']['press_before']:.3f} -> {b['ours']['press_at_lowest']:.3f}; capture {b['capture']['jaw_before']:.3f} "
          f"-> {b['capture']['jaw_lowest']:.3f} (frame {b['capture']['lowest_at_frame']:+d}), mouthPress "
          f"{b['capture']['press_before']:.3f} -> {b['capture']['press_at_lowest']:.3f}; other words' onsets ({o['onsets']}) "
          f"ours {o['ours']['jaw_before']:.3f} -> {o['ours']['jaw_lowest']:.3f}, capture {o['capture']['jaw_before']:.3f} "
          f"-> {o['capture']['jaw_lowest']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
