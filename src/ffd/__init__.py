"""ffd: face forensics. Detect GAN-generated faces, report on it, export the detector, segment faces.

Label convention everywhere (files, metrics, exports): 0 = real, 1 = fake; a probability is P(fake).
"""

import logging

__version__ = "0.1.0"

LABELS = {0: "real", 1: "fake"}

# For the run's log file only, what the console shows as a table (conf/hydra/default.yaml routes it).
# Outside a Hydra run it only reaches handlers the application set up (never Python's stderr fallback).
record = logging.getLogger("ffd.record")
record.addHandler(logging.NullHandler())
