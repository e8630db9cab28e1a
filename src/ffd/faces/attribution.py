"""Which face parts a heatmap points at: its positive mass per region of the landmark geometry.

The regions come from segmentation.regions (MediaPipe's outlines, filled), merged into the parts a person
names: both eyes with their irises, both brows, the nose, the lips, the rest of the face oval as skin, and
everything outside the oval (hair, ears, neck, background) as one.
"""

from __future__ import annotations

import numpy as np

from ffd.segmentation.regions import REGION_CLASSES, region_masks

ATTRIBUTION_REGIONS: tuple[str, ...] = ("eyes", "brows", "nose", "lips", "skin", "hair_background")
_MERGED = {
    "face": "skin",
    "left_eyebrow": "brows",
    "right_eyebrow": "brows",
    "nose": "nose",
    "left_eye": "eyes",
    "right_eye": "eyes",
    "lips": "lips",
    "left_iris": "eyes",
    "right_iris": "eyes",
}


def region_map(landmarks_px: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) index into ATTRIBUTION_REGIONS for one face; landmarks_px: (478, 2) pixels in that image.

    Painted in REGION_CLASSES order as segmentation.regions.label_map does, so a part wins over the skin
    it lies on (and an iris over its eye)."""
    masks = region_masks(np.asarray(landmarks_px, dtype=np.float64), height, width)
    regions = np.full((height, width), ATTRIBUTION_REGIONS.index("hair_background"), np.uint8)
    for name in REGION_CLASSES[1:]:
        regions[masks[name]] = ATTRIBUTION_REGIONS.index(_MERGED[name])
    return regions


def region_shares(heatmap: np.ndarray, landmarks_px: np.ndarray) -> dict[str, float]:
    """Share of the heatmap's positive mass in each region (landmarks in the heatmap's pixels): the shares
    sum to 1, or are all 0 for a heatmap with no positive value. Negative values count as 0."""
    height, width = heatmap.shape
    regions = region_map(landmarks_px, height, width)
    mass = np.bincount(
        regions.ravel(), weights=np.clip(heatmap, 0, None).ravel(), minlength=len(ATTRIBUTION_REGIONS)
    )
    total = mass.sum()
    shares = mass / total if total > 0 else np.zeros_like(mass)
    return {name: float(share) for name, share in zip(ATTRIBUTION_REGIONS, shares, strict=True)}
