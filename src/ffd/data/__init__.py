"""Data: index a data root (index.py), load and augment faces (datamodule.py, transforms.py), and generate
the synthetic demo set (synthetic.py). Import from the modules; this file stays empty so that
``python -m ffd.data.synthetic`` runs cleanly."""
