"""A model card: what a detector was trained on and how well it tested, carried by its files.

Written into the checkpoint after fitting (``ffd.models.notes``), copied into ONNX exports, printed in one
line by ``ffd.predict``. A verdict means what the training data lets it mean: a model trained on the
synthetic demo set has learned that set's planted trace, nothing about real photos, and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ffd import __version__

SYNTHETIC = "synthetic demo set"
ALIGNED_MANIFEST = "manifest.csv"  # written by ffd.align beside the crops it made
CARD_METRICS = ("test/accuracy", "test/auroc", "test/auprc")


def training_card(datamodule: Any, net_name: str, metrics: Mapping[str, float]) -> dict[str, Any]:
    """The card of a model fitted on ``datamodule`` (a FacesDataModule), with its test metrics if tested."""
    root = Path(str(datamodule.root)).expanduser() if datamodule.root else None
    aligned = root is not None and (root / ALIGNED_MANIFEST).is_file()
    return {
        "network": net_name,
        "training_data": SYNTHETIC if datamodule.synthetic else "Kaggle-layout folder",
        "data_root": str(root) if root else None,
        "image_size": int(datamodule.image_size),
        "face_alignment": "ffd.align (FFHQ-style)" if aligned else "none by ffd (as given)",
        "test_metrics": {
            name.split("/", 1)[1]: round(float(metrics[name]), 4) for name in CARD_METRICS if name in metrics
        },
        "trained": datetime.now(timezone.utc).date().isoformat(),
        "ffd_version": __version__,
    }


def card_line(card: Mapping[str, Any]) -> str:
    """The card in one line, for the console; a model without one says so."""
    if not card:
        return "Model card: none (a model trained before ffd wrote cards): nothing says what it learned from."
    tested = ", ".join(f"{name} {value:.4f}" for name, value in card.get("test_metrics", {}).items())
    return (
        f"Model card: {card.get('network')} trained {card.get('trained')} on the {card.get('training_data')}"
        f" at {card.get('image_size')} px, face alignment {card.get('face_alignment')}; "
        + (f"test {tested}." if tested else "not tested.")
    )


def synthetic_warning(card: Mapping[str, Any]) -> str | None:
    """The warning for a model that learned the synthetic demo set's trace, else None."""
    if card.get("training_data") != SYNTHETIC:
        return None
    return (
        "This model was trained on ffd's synthetic demo set: it learned a planted upsampling trace on "
        "cartoon faces, so its verdicts on real photos mean nothing. Train on real data "
        "(data=kaggle) before acting on a verdict."
    )
