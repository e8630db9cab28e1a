"""hparams_search=optuna: Optuna's TPE search through hydra-optuna-sweeper, ranked by ffd.train's return
value (the tested epoch's validation AUROC), ending with ffd's sweep summary table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from cli import TINY, run_ffd
from ffd.sweep import column_titles, shown_value

pytest.importorskip(
    "hydra_plugins.hydra_optuna_sweeper",
    reason="hydra-optuna-sweeper is the optuna extra (in dev): pip install -e '.[optuna]' runs this file",
)

BOUNDS = {  # conf/hparams_search/optuna.yaml's search space
    "model.optimizer.lr": (1.0e-4, 3.0e-3),
    "model.optimizer.weight_decay": (1.0e-6, 1.0e-2),
    "model.scheduler.warmup_epochs": (0, 2),
    "model.net.dropout": (0.0, 0.3),
}


def test_a_three_trial_search_samples_the_space_and_ranks_by_validation_auroc(tmp_path: Path):
    result = run_ffd(
        "ffd.train", "model=vit", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *TINY, root=tmp_path
    )
    (sweep,) = (tmp_path / "outputs" / "train" / "multirun").iterdir()
    with (sweep / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["job"] for row in rows] == ["0", "1", "2"] and {row["status"] for row in rows} == {"ok"}
    for key, (low, high) in BOUNDS.items():
        values = [float(row[key]) for row in rows]
        assert all(low <= value <= high for value in values), (key, values)
    assert len({row["model.optimizer.lr"] for row in rows}) == 3  # sampled, not one grid point
    scores = [float(row["objective"]) for row in rows]
    assert all(0 <= score <= 1 for score in scores)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(scores))
    winner = rows[scores.index(max(scores))]
    assert best["best_params"]["model.optimizer.lr"] == pytest.approx(float(winner["model.optimizer.lr"]))
    # The table names the keys by their last part and marks the best trial.
    printed = result.stdout
    assert "val AUROC" in printed and "weight_decay" in printed and f"{max(scores):.4f} *" in printed


def test_the_table_shortens_keys_and_sampled_floats():
    keys = ["model.optimizer.lr", "model.net.dropout", "a.dropout", "data.root"]
    assert column_titles(keys) == ["lr", "model.net.dropout", "a.dropout", "root"]
    assert shown_value("0.0003574712922600243") == "0.0003575"
    assert shown_value("4.207053950287936e-06") == "4.207e-06"
    assert shown_value("0.25") == "0.25" and shown_value("/sets/v1.12345") == "/sets/v1.12345"
