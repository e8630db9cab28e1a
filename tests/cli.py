"""Run ffd's entry points as a user does: `python -m ffd.<task> overrides...` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A tiny synthetic set and a tiny budget: this checks the plumbing, not the accuracy.
TINY = [
    "experiment=quickstart",
    "data.synthetic.image_size=32",
    "data.synthetic.train=24",
    "data.synthetic.val=12",
    "data.synthetic.test=12",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "callbacks.model_summary=null",
]
TINY_DATA = ["data=synthetic", *(o for o in TINY if o.startswith("data."))]


def run_ffd(
    module: str, *overrides: str, root: Path, expect_ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m module`` with FFD_ROOT=root (its outputs/ and data/ go there), and ``env`` on top."""
    env = {
        **os.environ,
        "FFD_ROOT": str(root),
        "HYDRA_FULL_ERROR": "0",
        "PYTHONWARNINGS": "ignore",
        # Offline: no test may reach huggingface.co (a missing weight file fails at once instead of after
        # the hub's retries). A fixed width: rich sizes its tables to COLUMNS when not on a terminal, so
        # console assertions do not depend on the terminal pytest was started from.
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
        **(env or {}),
    }
    result = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if expect_ok:
        assert result.returncode == 0, f"{module} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def run_dirs(root: Path, task: str) -> list[Path]:
    """The run folders (those holding .hydra/) of a task under root/outputs, sorted."""
    return sorted(p.parent for p in (root / "outputs" / task).glob("**/.hydra"))
