"""Stitched 360° panoramas for generated scenes (labelled generated): people drawn so that their labels show.

What a label says is drawn where a model can see it: a seated person is shorter and bent (thighs level,
on a bench), a walking person's legs are apart, the facing direction shows as the side of the head with
the nose (the other side is hair; someone facing away shows hair only), and each track keeps its own
clothing colours. A box that crosses the seam is drawn at both edges, so its two parts join in panorama
order. Drawing is plain PIL on a per-sequence background; the cost is the JPEG encoding of each frame."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from helpers.core.io import atomic_path
from helpers.data.scenes import HEIGHT, WIDTH


# Bump when the drawing changes: cached panoramas with another version are redrawn.
RENDERER_VERSION = 1


JPEG_QUALITY = 85


# Written into every JPEG's comment field, so a crop's source file says what it is.
GENERATED_COMMENT = "generated JRDB-like panorama (not JRDB): drawn from generated labels"


_SITTING, _WALKING = 3, 0  # activity codes of helpers.data.scenes.TYPE_NAMES


def make_keyframes(people: pd.DataFrame, stride: int) -> pd.DataFrame:
    """The rows of the frames that ``select_keyframes(scenes, stride)`` keeps: every stride-th frame
    of a sequence counted from its first frame with people (so exactly the frames notebook 01 uses)."""
    first = people.groupby("seq")["frame"].transform("min")
    return people[((people["frame"] - first) % max(int(stride), 1) == 0).to_numpy()]


def _hash01(seq: np.ndarray, track: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per (sequence, track): colours stay with a track across
    frames without drawing from the generator's random stream (which would change the labels)."""
    mix = np.uint64((int(salt) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF)  # python ints: no overflow warning
    h = (seq.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
         + track.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9) + mix)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xD6E8FEB86659FD93)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[N] hue, saturation, value in [0, 1] -> [N, 3] uint8 RGB (vectorised HSV cone)."""
    k = np.mod(np.stack([5.0, 3.0, 1.0])[:, None] + h[None, :] * 6, 6)
    rgb = v[None, :] - v[None, :] * s[None, :] * np.clip(np.minimum(k, 4 - k), 0, 1)
    return np.round(rgb.T * 255).astype(np.uint8)


def make_clothing(seq: np.ndarray, track: np.ndarray) -> dict[str, np.ndarray]:
    """Per person [N, 3] uint8 colours: shirt, trousers, hair, skin; fixed per (sequence, track)."""
    u = [_hash01(seq, track, k) for k in range(6)]
    shirt = _hsv_to_rgb(u[0], 0.35 + 0.6 * u[1], 0.35 + 0.6 * u[2])
    trousers = _hsv_to_rgb(np.mod(u[0] + 0.5, 1), 0.2 + 0.5 * u[3], 0.15 + 0.45 * u[1])
    hair = _hsv_to_rgb(0.05 + 0.06 * u[4], 0.3 + 0.5 * u[5], 0.08 + 0.5 * u[4])
    skin = _hsv_to_rgb(0.05 + 0.03 * u[5], 0.25 + 0.35 * u[3], 0.45 + 0.5 * u[2])
    return {"shirt": shirt, "trousers": trousers, "hair": hair, "skin": skin}


def make_background(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """[H, W, 3] uint8: a wall above the horizon with door and pillar panels, a floor below it; the
    panels wrap across the seam like the room does."""
    rng = np.random.default_rng([int(seed), 7])  # its own stream: never the generator's
    horizon = height // 2
    # Shading in bands of 16 rows: JPEG's 8 x 8 blocks stay flat, which halves the file size.
    y = (np.arange(height) // 16 * 16).astype(np.float64)[:, None]
    wall = rng.uniform(150, 215, 3)
    floor = rng.uniform(70, 140, 3)
    shade = np.where(y < horizon, 1.0 - 0.15 * y / horizon, 0.75 + 0.25 * (y - horizon) / (height - horizon))
    base = np.where(y < horizon, wall, floor) * shade                          # [H, 3]
    img = np.repeat(base[:, None, :], width, axis=1)
    for _ in range(int(rng.integers(8, 16))):
        x0, pw = int(rng.integers(0, width)), int(rng.integers(40, 220))
        cols = np.arange(x0, x0 + pw) % width                                  # wraps at the seam
        top = int(rng.integers(horizon - 200, horizon - 60))
        img[max(top, 0):horizon + 20, cols] = rng.uniform(60, 230, 3)
    return img.astype(np.uint8)


def _facing(people: pd.DataFrame, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(lateral, toward) per person: the labelled facing (rot_z, robot frame) against the line of
    sight from the box centre's bearing. lateral > 0 faces right in the image, toward > 0 faces the camera."""
    cx = np.mod(people["x"].to_numpy() + people["w"].to_numpy() / 2, width)
    bearing = -2 * math.pi * (cx / width - 0.5)            # x = W (atan2(-Y, X) / 2pi + 0.5)
    rel = np.nan_to_num(people["rot_z"].to_numpy(), nan=math.pi) - bearing
    # Bearing grows to the left in the panorama, so a turn towards larger bearing faces left.
    return -np.sin(rel), -np.cos(rel)


def _draw_head(d: ImageDraw.ImageDraw, cx: float, top: float, r: float, lateral: float, toward: float,
               c: dict[str, tuple]) -> None:
    """Head with hair on the back and the nose on the facing side (facing away: hair only)."""
    cy = top + r
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c["skin"])
    back = math.degrees(math.atan2(-0.6, -lateral if abs(lateral) > 1e-3 else 1e-3))
    span = 150 + 200 * max(0.0, -toward)                    # the more it faces away, the more hair
    d.pieslice([cx - r, cy - r, cx + r, cy + r], back - span / 2, back + span / 2, fill=c["hair"])
    if toward > -0.3 or abs(lateral) > 0.5:                 # the nose shows unless seen from behind
        nx = cx + lateral * r * 1.15
        d.polygon([(nx, cy - 0.2 * r), (nx + lateral * 0.5 * r, cy + 0.15 * r), (nx, cy + 0.4 * r)],
                  fill=c["nose"])
        d.ellipse([nx - 0.22 * r, cy - 0.1 * r, nx + 0.22 * r, cy + 0.34 * r], fill=c["nose"])
    if toward > 0.3:                                        # eyes when it faces the camera
        for ex in (cx + (lateral - 0.35) * 0.6 * r, cx + (lateral + 0.35) * 0.6 * r):
            d.ellipse([ex - 0.12 * r, cy - 0.25 * r, ex + 0.12 * r, cy - 0.02 * r], fill=(20, 20, 20))


def _draw_person(d: ImageDraw.ImageDraw, box: tuple[float, float, float, float], activity: int, lateral: float,
                 toward: float, c: dict[str, tuple]) -> None:
    """One person inside box (x, y, w, h); sitting: bent at hip and knee on a bench; walking: legs apart."""
    x, y, w, h = box
    cx, r = x + w / 2, max(0.1 * h, 1.5)
    _draw_head(d, cx, y, r, lateral, toward, c)
    hip = y + (0.62 if activity == _SITTING else 0.52) * h
    tw = 0.38 * w
    d.rounded_rectangle([cx - tw, y + 2 * r, cx + tw, hip], radius=max(tw * 0.4, 1), fill=c["shirt"],
                        outline=(40, 40, 40))  # an outline keeps dark clothes apart from the floor
    arm = max(0.09 * w, 1)
    d.line([(cx - tw, y + 2.3 * r), (cx - tw - 0.08 * w, hip - 0.05 * h)], fill=c["shirt"], width=int(arm))
    d.line([(cx + tw, y + 2.3 * r), (cx + tw + 0.08 * w, hip - 0.05 * h)], fill=c["shirt"], width=int(arm))
    leg = max(int(0.16 * w), 1)
    foot = y + h
    if activity == _SITTING:
        side = 1.0 if lateral >= 0 else -1.0
        knee = (cx + side * max(abs(lateral), 0.35) * 0.55 * w, hip)
        d.rectangle([min(cx, knee[0]) - 0.3 * w, hip + 0.02 * h, max(cx, knee[0]) + 0.1 * w, hip + 0.08 * h],
                    fill=(110, 80, 50))                     # the bench under the hips
        for dx in (-0.12 * w, 0.12 * w):
            d.line([(cx + dx, hip), (knee[0] + dx, knee[1])], fill=c["trousers"], width=leg)
            d.line([(knee[0] + dx, knee[1]), (knee[0] + dx, foot)], fill=c["trousers"], width=leg)
    else:
        spread = 0.42 * w if activity == _WALKING else 0.1 * w
        for s in (-1, 1):
            d.line([(cx + s * 0.12 * w, hip), (cx + s * spread, foot)], fill=c["trousers"], width=leg)
            d.ellipse([cx + s * spread - leg, foot - leg * 0.6, cx + s * spread + leg, foot], fill=(30, 30, 30))


def make_panorama(background: np.ndarray, people: pd.DataFrame, width: int = WIDTH) -> Image.Image:
    """One frame: the background with its people (x, y, w, h, activity, rot_z, seq, track), far ones first;
    a box spilling past either edge is drawn again one panorama width over, so it wraps."""
    img = Image.fromarray(background)
    d = ImageDraw.Draw(img)
    order = np.argsort((people["y"] + people["h"]).to_numpy(), kind="stable")  # feet higher up = farther
    p = people.iloc[order]
    lateral, toward = _facing(p, width)
    cols = make_clothing(p["seq"].to_numpy(), p["track"].to_numpy())
    boxes = p[["x", "y", "w", "h"]].to_numpy()
    activity = p["activity"].to_numpy()
    for k in range(len(p)):                                 # drawing is per person by nature
        c = {name: tuple(int(v) for v in cols[name][k]) for name in cols}
        c["nose"] = (200, 40, 40)
        x, y, w, h = boxes[k]
        for shift in (0.0, -float(width), float(width)):
            if x + shift < width and x + w + shift > 0:
                _draw_person(d, (x + shift, y, w, h), int(activity[k]), float(lateral[k]), float(toward[k]), c)
    return img


def write_panoramas(people: pd.DataFrame, images_dir: str | Path, names: dict[int, str], stride: int,
                    seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> int:
    """Draw the keyframes (``make_keyframes``) of generated people as
    ``images_dir/<sequence name>/<frame:06d>.jpg``, each written atomically; returns how many."""
    keep = make_keyframes(people, stride)
    n = 0
    for s, rows in keep.groupby("seq", sort=True):
        background = make_background(seed * 100_003 + int(s), width, height)
        for frame, frame_rows in rows.groupby("frame", sort=True):
            img = make_panorama(background, frame_rows, width)
            with atomic_path(Path(images_dir) / names[int(s)] / f"{int(frame):06d}.jpg", suffix=".jpg") as tmp:
                img.save(tmp, format="JPEG", quality=JPEG_QUALITY, comment=GENERATED_COMMENT)
            n += 1
    return n
