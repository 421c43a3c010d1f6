"""Generated multi-view sequences with a known ceiling (notebook 07), and the loader for a user's arrays."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from helpers.core.errors import DataError, WorkbookError


@dataclass
class MultiViewSplit:
    frames: np.ndarray       # [N, T, D] float32 observed per-frame features
    keypoints: np.ndarray    # [N, T, P, C] float32 per-frame keypoints
    target: np.ndarray       # [N, D] float32 frontal feature
    ids: np.ndarray          # [N] int64 identity (splits never share one)

    def __len__(self) -> int:
        return len(self.target)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frames, keypoints, target) as the training loop's (inputs..., target) tuple."""
        return (torch.from_numpy(self.frames), torch.from_numpy(self.keypoints), torch.from_numpy(self.target))


@dataclass
class MultiViewData:
    train: MultiViewSplit
    val: MultiViewSplit
    test: MultiViewSplit
    generated: bool
    source: str
    ceiling_cos: float | None = None             # on the validation split (the curves are validation)
    ceiling_cos_test: float | None = None
    ceiling_method: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    train_extra: MultiViewSplit | None = None    # more training identities, for the data control run

    def with_extra_training(self) -> "MultiViewData":
        """The same data with ``train_extra`` joined to the training split (val/test unchanged)."""
        if self.train_extra is None or len(self.train_extra) == 0:
            raise WorkbookError("with_extra_training: no extra training identities were generated "
                                "(control_data_factor must be > 1 with generated data)")
        t, e = self.train, self.train_extra
        joined = MultiViewSplit(*(np.concatenate([a, b]) for a, b in
                                  ((t.frames, e.frames), (t.keypoints, e.keypoints), (t.target, e.target),
                                   (t.ids, e.ids))))
        return MultiViewData(joined, self.val, self.test, self.generated,
                             self.source + f" + {len(np.unique(e.ids))} extra training identities",
                             self.ceiling_cos, self.ceiling_cos_test, self.ceiling_method, dict(self.info))

    @property
    def feat_dim(self) -> int:
        return int(self.train.frames.shape[-1])

    @property
    def kp_dim(self) -> int:
        return int(np.prod(self.train.keypoints.shape[2:]))

    def summary(self) -> pd.DataFrame:
        rows = []
        for name, s in (("train", self.train), ("val", self.val), ("test", self.test)):
            rows.append({"split": name, "sequences": len(s), "identities": int(len(np.unique(s.ids))),
                         "frames_per_seq": s.frames.shape[1], "feat_dim": s.frames.shape[2],
                         "keypoints": "×".join(map(str, s.keypoints.shape[2:]))})
        return pd.DataFrame(rows)


def _rotation_angles(yaw: np.ndarray, pitch: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Angle of each of the D/2 feature planes: a_j·yaw + b_j·pitch. yaw/pitch [...]; -> [..., D/2]."""
    return yaw[..., None] * freqs[:, 0] + pitch[..., None] * freqs[:, 1]


def _rotate(x: np.ndarray, angles: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Rotate consecutive coordinate pairs of x [..., D] by angles [..., D/2] (R or Rᵀ)."""
    c, s = np.cos(angles), np.sin(angles)
    if inverse:
        s = -s
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = c * x0 - s * x1
    out[..., 1::2] = s * x0 + c * x1
    return out


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def make_multiview_data(n_identities: int = 600, seqs_per_identity: int = 4, frames: int = 8,
                        feat_dim: int = 32, n_keypoints: int = 10, obs_noise: float = 1.2,
                        kp_noise: float = 0.02, yaw_deg: float = 70.0, pitch_deg: float = 30.0,
                        val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 0,
                        control_data_factor: float = 0.0) -> MultiViewData:
    """Generated multi-view sequences with a known ceiling (see the module docstring).

    Args:
        n_identities, seqs_per_identity: people, and sequences of each; splits are by identity.
        frames: frames per sequence (T); feat_dim: D (even); n_keypoints: P.
        obs_noise: norm of the per-frame feature noise relative to |f| = 1 (σ).
        kp_noise: std of keypoint noise (shape units); yaw_deg/pitch_deg: pose ranges (±).
        control_data_factor: > 1 also generates (factor − 1) × the training identities as
            ``train_extra`` (same map, same val/test), for a control run with more data.
    """
    _check_multiview_sizes(n_identities, seqs_per_identity, frames, feat_dim, n_keypoints)
    # Each step below draws from rng in turn: their order is part of the generated data.
    rng = np.random.default_rng(seed)
    n_val, n_test = max(1, int(round(val_frac * n_identities))), max(1, int(round(test_frac * n_identities)))
    n_extra = int(round(max(0.0, control_data_factor - 1.0) * (n_identities - n_val - n_test)))
    n_all = n_identities + n_extra
    freqs, f, shapes = _identities(rng, n_all, feat_dim, n_keypoints)
    ids = np.repeat(np.arange(n_all), seqs_per_identity)                  # [N]
    target = f[ids]                                                        # [N, D]
    yaw, pitch, ang, obs = _observe_features(rng, target, freqs, frames, yaw_deg, pitch_deg, obs_noise)
    kp = _observe_keypoints(rng, shapes[ids], yaw, pitch, kp_noise)
    # The ceiling: the frame average after undoing the true rotation (Bayes direction given poses).
    oracle_cos = _cos_rows(_rotate(obs, ang, inverse=True).mean(1), target)
    sp_rows = _split_of_identity(rng, n_identities, n_val, n_test, n_all)[ids]  # [N] 0 train .. 3 extra

    def take(k: int) -> MultiViewSplit:
        m = sp_rows == k
        return MultiViewSplit(obs[m].astype(np.float32), kp[m].astype(np.float32),
                              target[m].astype(np.float32), ids[m].astype(np.int64))

    analytic = 1.0 / math.sqrt(1.0 + obs_noise ** 2 / frames)
    return MultiViewData(
        take(0), take(1), take(2), generated=True, train_extra=take(3) if n_extra else None,
        source=(f"generated: {n_identities} identities × {seqs_per_identity} sequences × {frames} frames, "
                f"D={feat_dim}, {n_keypoints} keypoints, feature noise σ={obs_noise}, keypoint noise {kp_noise}"),
        ceiling_cos=float(oracle_cos[sp_rows == 1].mean()),
        ceiling_cos_test=float(oracle_cos[sp_rows == 2].mean()),
        ceiling_method=("Monte Carlo with the true map: cosine of the frame-averaged, de-rotated features "
                        "(true poses) with the target, averaged over the split's samples; an upper bound "
                        "for a model that must infer the pose from keypoints"),
        info={"analytic_ceiling_approx": analytic, "obs_noise": obs_noise, "frames": frames,
              "feat_dim": feat_dim, "seed": seed})


def _check_multiview_sizes(n_identities: int, seqs_per_identity: int, frames: int, feat_dim: int,
                           n_keypoints: int) -> None:
    if feat_dim % 2:
        raise WorkbookError(f"feat_dim={feat_dim}; expected an even number (features rotate in planes)")
    if n_identities < 10 or seqs_per_identity < 1 or frames < 1 or n_keypoints < 3:
        raise WorkbookError(f"make_multiview_data: n_identities={n_identities}, seqs_per_identity="
                            f"{seqs_per_identity}, frames={frames}, n_keypoints={n_keypoints}; expected "
                            ">= 10, >= 1, >= 1, >= 3")


def _identities(rng: np.random.Generator, n_all: int, feat_dim: int, n_keypoints: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(freqs [D/2, 2], f [I, D], shapes [I, P, 3]): the fixed map (per-plane pose frequencies, the same
    for every sample), each identity's unit frontal feature and its body shape (a shared mean shape
    plus a little individual variation)."""
    freqs = rng.uniform(0.5, 2.0, size=(feat_dim // 2, 2)) * rng.choice([-1, 1], size=(feat_dim // 2, 2))
    mean_shape = rng.normal(0, 1, size=(n_keypoints, 3))
    f = rng.normal(size=(n_all, feat_dim))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    shapes = mean_shape + 0.15 * rng.normal(size=(n_all, n_keypoints, 3))
    return freqs, f, shapes


def _observe_features(rng: np.random.Generator, target: np.ndarray, freqs: np.ndarray, frames: int, yaw_deg: float,
                      pitch_deg: float, obs_noise: float) -> tuple[np.ndarray, ...]:
    """(yaw, pitch [N, T], ang [N, T, D/2], obs [N, T, D]): a random pose per frame, and the target
    [N, D] rotated by the pose's plane angles plus noise of norm ~obs_noise."""
    n, feat_dim = target.shape
    yaw = np.radians(yaw_deg) * rng.uniform(-1, 1, size=(n, frames))      # [N, T]
    pitch = np.radians(pitch_deg) * rng.uniform(-1, 1, size=(n, frames))
    ang = _rotation_angles(yaw, pitch, freqs)                              # [N, T, D/2]
    noise = obs_noise / math.sqrt(feat_dim) * rng.normal(size=(n, frames, feat_dim))
    obs = _rotate(np.broadcast_to(target[:, None, :], (n, frames, feat_dim)).copy(), ang) + noise
    return yaw, pitch, ang, obs


def _observe_keypoints(rng: np.random.Generator, shapes: np.ndarray, yaw: np.ndarray, pitch: np.ndarray,
                       kp_noise: float) -> np.ndarray:
    """Keypoints [N, T, P, 2]: each sample's shape [N, P, 3] rotated by yaw (about y) then pitch
    (about x) [N, T], projected to (x, y), plus noise."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    s = shapes[:, None]                                                    # [N, 1, P, 3]
    x1 = cy[..., None] * s[..., 0] + sy[..., None] * s[..., 2]
    z1 = -sy[..., None] * s[..., 0] + cy[..., None] * s[..., 2]
    y2 = cp[..., None] * s[..., 1] - sp[..., None] * z1
    n, frames = yaw.shape
    return np.stack([x1, y2], -1) + kp_noise * rng.normal(size=(n, frames, shapes.shape[1], 2))


def _split_of_identity(rng: np.random.Generator, n_identities: int, n_val: int, n_test: int, n_all: int) -> np.ndarray:
    """Split of each identity [I]: 0 train, 1 val, 2 test (a random choice among the first n_identities),
    3 the extra training identities after them."""
    perm = rng.permutation(n_identities)
    split_of = np.zeros(n_all, dtype=np.int64)
    split_of[perm[:n_val]] = 1
    split_of[perm[n_val:n_val + n_test]] = 2
    split_of[n_identities:] = 3
    return split_of


def load_multiview_data(data: str, run_seed: int = 0, **gen_params: Any) -> MultiViewData:
    """``data="generated"`` -> `make_multiview_data(**gen_params)`; otherwise a user's npz.

    A user's npz holds ``frames`` [N, T, D], ``keypoints`` [N, T, P, C] (or [N, T, K]), ``target``
    [N, D]; optional ``ids`` [N] (identity: the split is by identity), ``split`` [N] (0 train,
    1 val, 2 test; overrides the random split) and ``ceiling_cos`` (scalar, if known).
    """
    if data == "generated":
        return make_multiview_data(seed=run_seed, **gen_params)
    path = Path(data)
    if not path.is_file():
        raise DataError(f"data={data!r}: not 'generated' and no such file; expected an .npz with "
                        "frames [N,T,D], keypoints [N,T,P,C], target [N,D]")
    try:
        z = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # noqa: BLE001 - any read failure is a bad file
        raise DataError(f"{path}: cannot be read as .npz ({type(e).__name__}: {e})") from None
    for key in ("frames", "keypoints", "target"):
        if key not in z:
            raise DataError(f"{path}: missing array {key!r}; expected frames [N,T,D], keypoints [N,T,P,C], "
                            f"target [N,D] (found {sorted(z)})")
    fr, kp, tg = (np.asarray(z[k], dtype=np.float32) for k in ("frames", "keypoints", "target"))
    if kp.ndim == 3:
        kp = kp[..., None]
    if fr.ndim != 3 or kp.ndim != 4 or tg.ndim != 2 or not (len(fr) == len(kp) == len(tg)) \
            or fr.shape[1] != kp.shape[1]:
        raise DataError(f"{path}: shapes frames {fr.shape}, keypoints {kp.shape}, target {tg.shape}; expected "
                        "[N,T,D], [N,T,P,C], [N,D'] with the same N and T")
    for key, a in (("frames", fr), ("keypoints", kp), ("target", tg)):
        if not np.isfinite(a).all():
            raise DataError(f"{path}: {key} has NaN/Inf values; expected finite numbers")
    n = len(tg)
    ids = np.asarray(z.get("ids", np.arange(n)), dtype=np.int64)
    rng = np.random.default_rng(run_seed)
    if "split" in z:
        sp = np.asarray(z["split"], dtype=np.int64)
        if sp.shape != (n,) or not np.isin(sp, [0, 1, 2]).all():
            raise DataError(f"{path}: split must be [N] with values 0/1/2 (train/val/test)")
    else:
        uniq = rng.permutation(np.unique(ids))
        k = max(1, int(round(0.15 * len(uniq))))
        split_of = {u: (1 if i < k else 2 if i < 2 * k else 0) for i, u in enumerate(uniq)}
        sp = np.array([split_of[u] for u in ids], dtype=np.int64)
    if not all((sp == k).any() for k in (0, 1, 2)):
        raise DataError(f"{path}: too few samples/identities for a train/val/test split ({n} rows)")
    parts = [MultiViewSplit(fr[sp == k], kp[sp == k], tg[sp == k], ids[sp == k]) for k in (0, 1, 2)]
    ceil = float(z["ceiling_cos"]) if "ceiling_cos" in z else None
    return MultiViewData(*parts, generated=False, source=f"user data: {path}", ceiling_cos=ceil,
                         ceiling_cos_test=ceil, ceiling_method="given in the file" if ceil else "unknown")


def evaluate_ceiling(data: MultiViewData) -> pd.DataFrame:
    """The ceiling next to simple reference predictors on the validation split."""
    v = data.val
    rows = [{"predictor": "ceiling (true map, true poses)", "val_cos": data.ceiling_cos,
             "how": data.ceiling_method}]
    if data.generated:
        rows.append({"predictor": "analytic approximation 1/√(1+σ²/T)",
                     "val_cos": data.info.get("analytic_ceiling_approx"), "how": "|f| = 1, D large"})
    rows.append({"predictor": "mean of raw frames (ignores pose)",
                 "val_cos": float(_cos_rows(v.frames.mean(1), v.target).mean()), "how": "no de-rotation"})
    rows.append({"predictor": "best single raw frame", "val_cos":
                 float(_cos_rows(v.frames, v.target[:, None]).max(1).mean()), "how": "oracle pick, no de-rotation"})
    return pd.DataFrame(rows)
