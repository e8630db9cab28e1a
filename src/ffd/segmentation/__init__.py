"""Face segmentation: MediaPipe landmarks, BiSeNet face parsing, and landmark-drawn region masks.

Run it with `python -m ffd.segment input=PATH [backend=landmarks|parsing|regions]`; see pipeline.py.
"""
