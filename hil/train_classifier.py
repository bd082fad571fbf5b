"""Train and measure the learned false-alarm filter on the scene-simulator family (on the ground).

    python -m hil.train_classifier train [--out flight/data/classifier.kclf]
    python -m hil.train_classifier evaluate [--weights FILE]

Training: scenes of the scene family's development seeds (hil.scene_family;
< 10000 here; seeds 1-12 by default, sides capped at `size`: kind, optics, noise,
clutter, speeds from 0.05 px/frame and targets held still before they move, all
drawn by the seed), the flight detector at `k_sigma` 3 (about 25 false alarms
a frame to learn from, where the flight's 5 gives under 1), every detection after the warm-up
labelled a target when a true target lies within 2 px (hil.scoring.match), else
a false alarm. scikit-learn's GradientBoostingClassifier (a test dependency,
never on board) fits the forest under a fixed seed; its trees are written in
flight.classifier's weights format. The same arguments give the same file,
octet for octet.

Evaluation: validation seeds (5001-5006 by default, never the held-out family
at 2**40 and above), the flight detector at its own threshold. ROC AUC of the
classifier's score against that of the detector's own SNR, false alarms per
frame when either is thresholded to keep a fixed share of the true detections,
and microseconds per chip of the kernel and its numpy twin.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np

from flight.classifier import FalseAlarmFilter, Weights, features, load_weights
from flight.classifier_ref import chip_features_ref, score_ref
from flight.detection import Detector, DetectorConfig

from .metrics import scene_for
from .scene import SceneSimulator
from .scene_family import draw_scene
from .scoring import match

DEVELOPMENT_SEEDS_BELOW = 10000
HELD_OUT_SEEDS_FROM = 2**40
VALIDATION_SEEDS = range(5000, 6000)    # development seeds kept out of training
LABEL_RADIUS_PX = 2.0


@dataclass(frozen=True)
class TrainingSetup:
    seeds: tuple = tuple(range(1, 13))
    frames: int = 80
    size: int = 256
    warmup: int = 10
    radius: int = 3
    lag: int = 4
    k_sigma: float = 3.0
    trees: int = 80
    depth: int = 3
    learning_rate: float = 0.2
    random_state: int = 11


def check_seeds(seeds, development: bool) -> None:
    for s in seeds:
        if s >= HELD_OUT_SEEDS_FROM:
            raise ValueError(f"seed {s} belongs to the held-out family (>= 2**40): never used here")
        if development and s >= DEVELOPMENT_SEEDS_BELOW:
            raise ValueError(f"training seed {s}: development seeds are below {DEVELOPMENT_SEEDS_BELOW}")
        if development and s in VALIDATION_SEEDS:
            raise ValueError(f"training seed {s} is a validation seed ({VALIDATION_SEEDS.start}-"
                             f"{VALIDATION_SEEDS.stop - 1})")


def labelled_detections(seed: int, frames: int, size: int, warmup: int, radius: int, lag: int,
                        detector: DetectorConfig):
    """(features, labels, snr, frames scored, targets present) of the family's scene `seed`, sides at most
    `size`."""
    scene = draw_scene(seed, size)
    sim = SceneSimulator(scene)
    detect = Detector(detector, (scene.height, scene.width), sim.calibration_bad_pixels()).process
    past: list[np.ndarray] = []
    xs, ys, snrs = [], [], []
    scored = present = 0
    for i in range(frames):
        frame, truth = sim.frame(i)
        dets = detect(frame)
        past.append(frame)
        if len(past) > lag + 1:
            past.pop(0)
        if i < max(warmup, lag):
            continue
        scored += 1
        present += len(truth)
        _, used = match(dets, truth, LABEL_RADIUS_PX)
        xs.append(features(frame, past[0], dets, radius))
        ys.append(used)
        snrs.append(dets["snr"].astype(np.float64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(snrs), scored, present


def dataset(setup: TrainingSetup, seeds, detector: DetectorConfig):
    parts = [labelled_detections(s, setup.frames, setup.size, setup.warmup, setup.radius, setup.lag, detector)
             for s in seeds]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), sum(p[3] for p in parts), sum(p[4] for p in parts))


def fit(x: np.ndarray, y: np.ndarray, setup: TrainingSetup) -> Weights:
    """A gradient-boosted forest on (x, y), as Weights."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=setup.trees, max_depth=setup.depth,
                                       learning_rate=setup.learning_rate, random_state=setup.random_state)
    model.fit(x, y.astype(np.int64))
    return forest_weights(model, float(np.mean(y)), setup.radius, setup.lag)


def forest_weights(model, prior: float, radius: int, lag: int) -> Weights:
    """sklearn's trees in our format: node ids offset per tree, leaves' values times the learning rate."""
    roots, feature, threshold, left, right, value = [], [], [], [], [], []
    offset = 0
    for estimator in model.estimators_[:, 0]:
        t = estimator.tree_
        leaf = t.children_left < 0
        roots.append(offset)
        feature.append(np.where(leaf, -1, t.feature))
        threshold.append(np.where(leaf, 0.0, t.threshold))
        left.append(np.where(leaf, -1, t.children_left + offset))
        right.append(np.where(leaf, -1, t.children_right + offset))
        value.append(np.where(leaf, model.learning_rate * t.value[:, 0, 0], 0.0))
        offset += t.node_count
    base = float(np.log(prior / (1.0 - prior)))     # the log-loss prior sklearn starts from
    weights = Weights(radius, lag, base, np.array(roots, np.int32), np.concatenate(feature).astype(np.int32),
                      np.concatenate(threshold).astype(np.float64), np.concatenate(left).astype(np.int32),
                      np.concatenate(right).astype(np.int32), np.concatenate(value).astype(np.float64))
    weights.check()
    return weights


def training_detector(setup: TrainingSetup) -> DetectorConfig:
    return replace(DetectorConfig(), k_sigma=setup.k_sigma, max_detections=1024)


def train(setup: TrainingSetup = TrainingSetup(), out=print) -> Weights:
    check_seeds(setup.seeds, development=True)
    x, y, _, scored, _ = dataset(setup, setup.seeds, training_detector(setup))
    out(f"training: seeds {list(setup.seeds)}, {scored} frames, {len(y)} detections ({int(y.sum())} targets)")
    return fit(x, y, setup)


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half)."""
    pos, neg = score[label], score[~label]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.concatenate([pos, neg])
    ranks = np.empty(len(order))
    sorter = np.argsort(order, kind="mergesort")
    sorted_ = order[sorter]
    # average ranks of ties
    _, first, counts = np.unique(sorted_, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[sorter] = np.repeat(avg, counts)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def false_alarms_at(score: np.ndarray, label: np.ndarray, keep: float, frames: int) -> float:
    """False alarms per frame above the threshold that keeps `keep` of the true detections."""
    t = np.quantile(score[label], 1.0 - keep, method="lower")
    return float(np.sum(score[~label] >= t)) / frames


def chip_timing(weights: Weights, x_frame, past, dets, repeats: int = 20) -> tuple[float, float]:
    """(kernel, numpy twin) microseconds per chip: features and forest, best of `repeats`."""
    filt = FalseAlarmFilter(weights, x_frame.shape)
    from flight.classifier import chip_centres, noise_scale

    def kernel():
        filt.score(x_frame, past, dets)

    def twin():
        cx, cy = chip_centres(dets, x_frame.shape, weights.radius)
        score_ref(chip_features_ref(x_frame, past, cx, cy, noise_scale(dets), dets["snr"], weights.radius), weights)

    times = []
    for fn in (kernel, twin):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        times.append(best / len(dets) * 1e6)
    return times[0], times[1]


def evaluate(weights: Weights, seeds=tuple(range(5001, 5007)), frames: int = 80, size: int = 256,
             k_sigma: float = DetectorConfig().k_sigma, out=print) -> dict:
    check_seeds(seeds, development=False)
    setup = TrainingSetup(radius=weights.radius, lag=weights.lag, frames=frames, size=size)
    x, y, snr, scored, present = dataset(setup, seeds, replace(DetectorConfig(), k_sigma=k_sigma,
                                                               max_detections=1024))
    filt = FalseAlarmFilter(weights, (size, size))
    score = 1.0 / (1.0 + np.exp(-filt.decision(x)))
    result = {"detections": len(y), "targets_detected": int(y.sum()), "frames": scored,
              "pd_detector": float(y.sum()) / max(present, 1), "fa_per_frame": float((~y).sum()) / scored,
              "auc_classifier": auc(score, y), "auc_snr": auc(snr, y)}
    out(f"validation: seeds {list(seeds)}, detector k_sigma {k_sigma:g}, {scored} frames {size}x{size}, "
        f"{len(y)} detections, "
        f"{int(y.sum())} on targets (Pd {result['pd_detector']:.3f}), {result['fa_per_frame']:.2f} false per frame")
    out(f"ROC AUC: classifier {result['auc_classifier']:.4f}, detector SNR alone {result['auc_snr']:.4f}")
    out("| true detections kept | FA/frame, ranked by SNR | FA/frame, ranked by classifier |")
    out("|---|---|---|")
    for keep in (1.0, 0.99, 0.95, 0.90):
        a, b = false_alarms_at(snr, y, keep, scored), false_alarms_at(score, y, keep, scored)
        result[f"fa_snr_{keep:g}"], result[f"fa_classifier_{keep:g}"] = a, b
        out(f"| {keep:.2f} | {a:.3f} | {b:.3f} |")
    sim = SceneSimulator(scene_for("cloudy", 1024, seeds[0]))
    big = [sim.frame(i)[0] for i in range(weights.lag + 1)]
    dets = Detector(replace(DetectorConfig(), k_sigma=4.0), (1024, 1024), sim.calibration_bad_pixels()).process
    for f in big[:-1]:
        dets(f)
    d = dets(big[-1])
    k_us, t_us = chip_timing(weights, big[-1], big[0], d)
    result.update(us_per_chip_kernel=k_us, us_per_chip_twin=t_us, chips_timed=len(d))
    out(f"us per chip (features + forest, {len(d)} chips of a 1024x1024 frame): kernel {k_us:.2f}, "
        f"numpy twin {t_us:.2f} ({t_us / k_us:.1f}x)")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.train_classifier", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on development seeds and write the weights file")
    t.add_argument("--out", default="flight/data/classifier.kclf")
    t.add_argument("--seeds", type=int, nargs="+", default=list(TrainingSetup.seeds))
    t.add_argument("--frames", type=int, default=TrainingSetup.frames)
    e = sub.add_parser("evaluate", help="measure weights on validation seeds")
    e.add_argument("--weights", default="", help="weights file (default: the one shipped)")
    e.add_argument("--seeds", type=int, nargs="+", default=list(range(5001, 5007)))
    e.add_argument("--frames", type=int, default=80)
    e.add_argument("--k-sigma", type=float, default=DetectorConfig().k_sigma,
                   help="the detector's threshold (default: the flight's)")
    args = parser.parse_args(argv)
    if args.command == "train":
        weights = train(replace(TrainingSetup(), seeds=tuple(args.seeds), frames=args.frames))
        data = weights.pack()
        with open(args.out, "wb") as f:
            f.write(data)
        print(f"wrote {args.out}: {len(weights.roots)} trees, {len(weights.feature)} nodes, {len(data)} octets")
    else:
        evaluate(load_weights(args.weights or None), tuple(args.seeds), args.frames, k_sigma=args.k_sigma)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
