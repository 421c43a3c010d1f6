"""``python -m helpers crops JRDB_ROOT --out DIR [--sequence S] [--size H W]``: the person crops the image
models see, one PNG per person and frame (``DIR/<sequence>_<frame>_<track>.png``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.core.errors import WorkbookError
from helpers.data.crops import DEFAULT_CROP_SIZE, write_crop_pngs
from helpers.data.jrdb import find_stitched_images, load_jrdb
from helpers.data.scenes import Scenes


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m helpers crops",
                                 description="Write every person crop of a JRDB-layout folder as a PNG file "
                                             "(crops come from the crop cache, built on first use).")
    ap.add_argument("root", help="JRDB root: labels/labels_2d_stitched/<sequence>.json and "
                                 "images/image_stitched/<sequence>/<frame>.jpg")
    ap.add_argument("--out", required=True, help="folder for <sequence>_<frame>_<track>.png")
    ap.add_argument("--sequence", action="append", metavar="S",
                    help="only this sequence (by name; repeat for more); default: every sequence with images")
    ap.add_argument("--size", nargs=2, type=int, default=list(DEFAULT_CROP_SIZE), metavar=("H", "W"),
                    help=f"crop height and width in pixels (default {DEFAULT_CROP_SIZE[0]} {DEFAULT_CROP_SIZE[1]})")
    return ap


def _frames_without_image(scenes: Scenes, chosen: list[int] | None) -> str:
    """A sentence on labelled frames that have no image (skipped: e.g. generated scenes draw only keyframes)."""
    p = scenes.people[["seq", "frame"]].drop_duplicates()
    missing = []
    for s in (chosen if chosen is not None else range(len(scenes.sequences))):
        name = scenes.sequences[s]
        have = find_stitched_images(scenes.image_root, name)
        missing += [scenes.image_root / name / f"{f:06d}.jpg" for f in p["frame"][p["seq"] == s] if f not in have]
    if not missing:
        return ""
    return f"; {len(missing):,} labelled frames have no image and were skipped (e.g. {missing[0]})"


def crops_main(argv: list[str]) -> int:
    """Write the crops; 2 with a one-line error on bad input (missing folder, image or sequence)."""
    args = _parser().parse_args(argv)
    try:
        scenes = load_jrdb(Path(args.root).expanduser())
        unknown = [s for s in args.sequence or [] if s not in scenes.sequences]
        if unknown:
            raise WorkbookError(f"sequence {unknown[0]!r} is not in {args.root}; it has: {', '.join(scenes.sequences)}")
        chosen = [scenes.sequences.index(s) for s in args.sequence] if args.sequence else None
        n = write_crop_pngs(scenes, args.out, chosen, args.size)
        skipped = _frames_without_image(scenes, chosen)
    except (WorkbookError, OSError) as e:
        # Bad input is one line, never a traceback; OSError covers unreadable or unwritable paths.
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n:,} crops ({args.size[0]} x {args.size[1]} px, from {scenes.n_images:,} stitched images"
          f"{', generated' if scenes.generated else ''}) to {args.out}{skipped}")
    return 0
