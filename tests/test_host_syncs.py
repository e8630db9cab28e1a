"""The training step never makes the host wait for the GPU: checked on a CPU by ffd.host_syncs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli import TINY, run_dirs, run_ffd
from ffd.dev.host_syncs import record_host_syncs
from ffd.models.classifier import DeepfakeClassifier


def _sites(counts) -> dict[str, int]:
    return {f"{op} {site.split(' ')[0]}": n for (op, site), n in counts.items()}


def test_host_reads_and_tensors_from_python_data_are_found_at_their_line() -> None:
    x = torch.randn(8)
    with record_host_syncs("cpu") as counts:
        x.sum().item()  # line A
        if x.max() > 0:  # line B
            pass
        x[x > 0].sum()  # line C
        torch.tensor([1.0, 2.0]) * x[:2]  # line D
        x[x < 0] = x.mean()  # line E
        (x * 2).exp()[torch.arange(3)].sum()  # waits for nothing
    lines = [n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1) if "# line " in text]
    found = _sites(counts)
    by_line = {int(key.rsplit(":", 1)[1]): key.split(" ")[0] for key in found}
    assert by_line == {
        lines[0]: "_local_scalar_dense",
        lines[1]: "_local_scalar_dense",  # bool(tensor)
        lines[2]: "index",
        lines[3]: "lift_fresh",
        lines[4]: "index_put",
    }, found
    assert sum(counts.values()) == 5


def test_what_the_dataloader_does_is_left_out_on_a_cpu() -> None:
    """On a GPU machine the loading runs in worker processes, where a host read waits for nothing."""
    data = [torch.full((2,), float(i)) for i in range(4)]

    def collate(items):
        return torch.stack(items), torch.tensor([float(item.sum().item()) for item in items])

    with record_host_syncs("cpu") as counts:
        batches = list(torch.utils.data.DataLoader(data, batch_size=2, collate_fn=collate))
    assert len(batches) == 2 and sum(counts.values()) == 0, dict(counts)


@pytest.fixture(scope="module")
def audited_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Both models, augmentation in the loader and on the device, 3 steps audited after 2."""
    root = tmp_path_factory.mktemp("host_syncs")
    run_ffd(
        "ffd.train",
        "-m",
        *TINY,
        "model=densenet,vit",
        "data.augment=true",
        "data.augment_on=cpu,gpu",
        "data.synthetic.train=56",  # 7 steps of 8
        "data.num_workers=1",  # the loading in a worker process, as on a GPU machine
        "test=false",
        "++trainer.enable_checkpointing=false",  # no checkpoint to write: the audit needs none
        "callbacks.model_checkpoint=null",
        "callbacks.latest_checkpoint=null",
        "+callbacks.host_syncs._target_=ffd.dev.host_syncs.HostSyncAudit",
        "+callbacks.host_syncs.start_step=2",
        "+callbacks.host_syncs.steps=3",
        "+callbacks.host_syncs.result_path=${paths.output_dir}/host_syncs.json",
        root=root,
    )
    runs = {}
    for run in run_dirs(root, "train"):
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        model = "densenet" if "model=densenet" in overrides else "vit"
        place = "gpu" if "augment_on=gpu" in overrides else "cpu"
        runs[f"{model}, augment on {place}"] = json.loads((run / "host_syncs.json").read_text())
    return runs


def test_a_training_step_waits_for_nothing(audited_runs: dict[str, dict]) -> None:
    """No value read back, no tensor built from Python data, in the step, the logging, the metrics, the
    progress bar, the optimizer or the GPU augmentation of the next batch."""
    assert len(audited_runs) == 4, list(audited_runs)
    for name, result in audited_runs.items():
        assert result["steps"] == 3, (name, result)
        assert result["per_step"] == 0, (name, result["sites"])


def test_an_evaluation_step_waits_for_nothing_and_scores_no_sampler_repeat() -> None:
    """The batch's last image is a distributed sampler's repeat: run, never scored, and dropping it reads
    nothing back; the epoch's loss is the mean over the scored images."""
    torch.manual_seed(0)
    model = DeepfakeClassifier(net={"name": "vit", "image_size": 16, "dim": 16, "depth": 1}).eval()
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    batch = {"image": images, "label": labels, "path": ["a", "b", "c", "a"], "bad": [], "repeats": 1}
    with torch.no_grad(), record_host_syncs("cpu") as counts:
        outputs = model.validation_step(batch, 0)
    assert sum(counts.values()) == 0, dict(counts)
    assert outputs["paths"] == ["a", "b", "c"] and outputs["labels"].tolist() == [0.0, 1.0, 1.0]
    assert model.val_metrics["auroc"].preds[0].shape == (3,)
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy_with_logits(model(images[:3]), labels[:3])
    torch.testing.assert_close(model.eval_losses["val"].compute(), expected)
