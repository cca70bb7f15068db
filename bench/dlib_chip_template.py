"""Where MTCNN's five points lie on the 150×150 chips dlib cuts (``get_face_chip``, padding 0.25):
the five-point template that makes faceattr's MTCNN alignment cut dlib's chip for
``faceattr.models.dlib_resnet`` (``CHIP_TEMPLATE``).

    python bench/dlib_chip_template.py --faces 300     # needs dlib-bin and ../shared/datasets/lfw

dlib aligns on its own five points (eye corners and the base of the nose) from its 5-point shape
predictor; MTCNN finds eye centres, the nose tip and mouth corners. Prints the median and spread
(scaled median absolute deviation) of MTCNN's points over the first ``--faces`` LFW photos with
one face dlib detects, in units of the chip side, and the template in code beside them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from faceattr.data.align import MTCNNDetector  # noqa: E402
from faceattr.models.dlib_resnet import CHIP_TEMPLATE  # noqa: E402
from tests.test_dlib_resnet import LFW, dlib_chips  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=int, default=300)
    args = p.parse_args()
    from PIL import Image

    chips = dlib_chips(args.faces)
    found = [d for d in MTCNNDetector("cpu").detect([Image.fromarray(c) for c in chips]) if d is not None]
    points = np.stack([d.landmarks for d in found]) / 150
    mean = np.median(points, 0)  # robust: MTCNN misplaces a point on a few tight chips
    std = np.median(np.abs(points - mean), 0) * 1.4826  # the MAD, scaled to a normal's std
    print(f"{len(found)} of {len(chips)} dlib chips of {LFW.name} with an MTCNN face")
    names = ("left eye", "right eye", "nose tip", "left mouth", "right mouth")
    print("| point | MTCNN on dlib's chips (median ± 1.4826·MAD, chip side) | CHIP_TEMPLATE |\n|---|---|---|")
    for name, m, s, t in zip(names, mean, std, CHIP_TEMPLATE, strict=True):
        print(f"| {name} | ({m[0]:.4f} ± {s[0]:.4f}, {m[1]:.4f} ± {s[1]:.4f}) | ({t[0]:.4f}, {t[1]:.4f}) |")


if __name__ == "__main__":
    main()
