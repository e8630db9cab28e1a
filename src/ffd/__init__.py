"""ffd: face forensics. Detect GAN-generated faces, report on it, export the detector, segment faces.

Label convention everywhere (files, metrics, exports): 0 = real, 1 = fake; a probability is P(fake).
"""

import logging
import warnings

__version__ = "0.1.0"

LABELS = {0: "real", 1: "fake"}

# For the run's log file only, what the console shows as a table (conf/hydra/default.yaml routes it).
# Outside a Hydra run it only reaches handlers the application set up (never Python's stderr fallback).
record = logging.getLogger("ffd.record")
record.addHandler(logging.NullHandler())


class WithoutLightningTips(logging.Filter):
    """Drops Lightning's advertisements ("💡 Tip: ... try installing litlogger"), printed on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


# Lightning 2.6 under torch >= 2.10 warns about its own use of torch's LeafSpec at every test and predict
# run: nothing a user can act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

# A resumed fit (ckpt_path=.../last.ckpt) writes its checkpoints into the folder of the checkpoint it resumes
# from, by design (ffd.train.continue_checkpoints): that folder is not empty, and Lightning says so.
warnings.filterwarnings(
    "ignore", message=r"Checkpoint directory .+ exists and is not empty\.$", category=UserWarning
)
