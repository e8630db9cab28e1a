"""ffd: face forensics. Detect GAN-generated faces, report on it, export the detector, segment faces.

Label convention everywhere (files, metrics, exports): 0 = real, 1 = fake; a probability is P(fake).
"""

__version__ = "0.1.0"

LABELS = {0: "real", 1: "fake"}
