"""Face-part masks drawn from the landmark outlines: a parsing-like map that needs no extra weights.

This is geometry, not a learned parser: each region is the polygon MediaPipe's connection set outlines
(see landmarks.GROUP_CONNECTIONS), filled. It knows nothing of hair, ears, neck or glasses.
"""

from __future__ import annotations

import cv2
import numpy as np

from ffd.segmentation.landmarks import GROUP_CONNECTIONS, GROUPS

# Painted in this order, so a later class wins where two overlap (irises over eyes, eyes over skin).
REGION_CLASSES: tuple[str, ...] = (
    "background",
    "face",
    "left_eyebrow",
    "right_eyebrow",
    "nose",
    "left_eye",
    "right_eye",
    "lips",
    "left_iris",
    "right_iris",
)
_GROUP_OF = {"face": "face_oval"}  # the face region is the face oval; every other region is its own group


def outlines(connections: tuple[tuple[int, int], ...]) -> list[list[int]]:
    """Closed outlines in a MediaPipe connection set.

    The sets are lists of chains (each connection starts where the previous one ended). A chain that ends
    where it starts is an outline (face oval, iris, nostril loop); two open chains in a row are the two
    sides of one (upper and lower eyelid or lip edge, the upper and lower edge of a brow). A chain left
    without a partner (the nose bridge) outlines nothing.
    """
    chains: list[list[int]] = []
    for start, end in connections:
        if chains and chains[-1][-1] == start:
            chains[-1].append(end)
        else:
            chains.append([start, end])
    rings, pending = [], None
    for chain in chains:
        if chain[0] == chain[-1]:
            rings.append(chain[:-1])
        elif pending is None:
            pending = chain
        else:
            rings.append(pending + [i for i in reversed(chain) if i not in pending])
            pending = None
    return rings


def region_masks(points: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    """Boolean (H, W) mask per region for one face; points: (478, 2) landmark pixels in that image.

    Each region is the even-odd fill of its outlines, so the inner lip line cuts the mouth opening out of
    the lips. The nose is the exception: MediaPipe's nose set is the bridge line plus the nostril loop, not
    an outline, so its region is the convex hull of its points.
    """
    masks = {}
    for region in REGION_CLASSES[1:]:
        group = _GROUP_OF.get(region, region)
        mask = np.zeros((height, width), np.uint8)
        if group == "nose":
            hull = cv2.convexHull(np.round(points[list(GROUPS[group])]).astype(np.int32))
            cv2.fillPoly(mask, [hull], 1)
        else:
            for ring in outlines(GROUP_CONNECTIONS[group]):
                filled = np.zeros_like(mask)
                cv2.fillPoly(filled, [np.round(points[ring]).astype(np.int32)], 1)
                mask ^= filled
        masks[region] = mask.astype(bool)
    return masks


def label_map(faces_masks: list[dict[str, np.ndarray]], height: int, width: int) -> np.ndarray:
    """(H, W) uint8 map of REGION_CLASSES indices, painting every face's regions in class order."""
    labels = np.zeros((height, width), np.uint8)
    for masks in faces_masks:
        for index, region in enumerate(REGION_CLASSES[1:], start=1):
            labels[masks[region]] = index
    return labels
