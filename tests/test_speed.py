"""Speed settings (trainer=gpu, SpeedUps, ProgressBar, loader workers, GPU augmentation, fused AdamW),
the SLURM launcher config, and `python -m ffd.bench` on the CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from cli import run_ffd
from ffd import bench, bench_measure, bench_table
from ffd.callbacks.progress import ModelSummary, ProgressBar
from ffd.callbacks.speed import SpeedUps
from ffd.data.datamodule import FacesDataModule
from ffd.data.synthetic import generate
from ffd.data.transforms import ResizeIfNeeded
from ffd.data.workers import default_num_workers
from ffd.errors import UserError
from ffd.models.classifier import DeepfakeClassifier, make_adamw
from ffd.resolvers import gpu_precision

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def compose_train(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def test_trainer_gpu_sets_the_loader_and_speed_callback_and_keeps_cpu_runs_apart() -> None:
    gpu = compose_train("trainer=gpu", "data.root=/data")
    assert gpu.trainer.accelerator == "gpu" and gpu.trainer.benchmark is True
    assert gpu.data.pin_memory and gpu.data.persistent_workers and gpu.data.num_workers is None
    assert gpu.data.augment_on == "gpu"
    assert gpu.callbacks.speed.channels_last is True and gpu.callbacks.speed.compile is False
    cpu = compose_train("trainer=cpu", "data.root=/data")
    assert cpu.trainer.accelerator == "cpu" and "speed" not in cpu.callbacks
    assert cpu.data.augment_on == "cpu"


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_gpu_precision_follows_the_gpu(monkeypatch, native_bf16: bool, expected: str) -> None:
    """A T4 or V100 reports bf16 support through emulation (torch's default question), with no bf16
    tensor cores: it gets fp16. trainer=gpu's precision is the same answer."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16 or including_emulation
    )
    assert gpu_precision() == expected
    gpu = compose_train("trainer=gpu", "data.root=/data")
    assert gpu.trainer.precision == expected  # read inside the patches: OmegaConf resolves on reading


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer() -> None:
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher",
        reason="needs the slurm extra (pip install 'ffd[slurm]'); installed by the dev extra",
    )
    cfg = compose_train("hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=3")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (3, 4, 4)


def test_speedups_make_the_network_channels_last_and_compile_it_in_place() -> None:
    model = DeepfakeClassifier(net={"name": "densenet", "backbone": "densenet121", "pretrained": False})
    keys = list(model.state_dict())
    SpeedUps(channels_last=True, compile=True, matmul_precision=None).setup(None, model, "fit")
    conv = model.net.backbone.features.conv0.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert model.net._compiled_call_impl is not None, "nn.Module.compile was not applied"
    assert list(model.state_dict()) == keys, "compiling must not rename the checkpoint's keys"


def test_the_matmul_precision_is_set_before_the_trainer_takes_the_gpu() -> None:
    """Lightning checks it when the trainer sets up a GPU, before callbacks' setup, and on the H200 told a
    trainer=gpu run to set what SpeedUps was about to set."""
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        SpeedUps(matmul_precision="high")
        assert torch.get_float32_matmul_precision() == "high"
        SpeedUps(matmul_precision=None)  # None leaves it as it is
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_every_batch_starts_a_cuda_graph_step_when_compiled(monkeypatch) -> None:
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    compiled, eager = SpeedUps(compile={"mode": "reduce-overhead"}), SpeedUps(compile=False)
    for speed in (compiled, eager):
        speed.on_train_batch_start(None, None, {}, 0)
        speed.on_validation_batch_start(None, None, {}, 0, 0)
        speed.on_test_batch_start(None, None, {}, 0, 0)
        speed.on_predict_batch_start(None, None, {}, 0, 0)
    assert len(marks) == 4


@pytest.mark.slow
def test_a_compiled_network_trains_and_validates_under_lightning(tmp_path) -> None:
    """reduce-overhead (CUDA graphs on a GPU, skipped on a CPU): the metrics never hold a graph output."""
    model = DeepfakeClassifier(net={"name": "vit", "image_size": 16, "dim": 16, "depth": 1})
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=generator)
    data = [{"image": images[i], "label": torch.tensor(float(i % 2))} for i in range(16)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[SpeedUps(compile={"mode": "reduce-overhead"})],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader, loader)
    assert model.net._compiled_call_impl is not None
    assert {"train/auroc", "val/auroc", "val/loss"} <= set(trainer.callback_metrics)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_adamw_is_fused_where_torch_has_the_kernel_unless_told_otherwise() -> None:
    params = [nn.Parameter(torch.zeros(3))]
    assert make_adamw(params, {"lr": 0.1}).defaults["fused"] is True
    assert not make_adamw([nn.Parameter(torch.zeros(3, device="meta"))], None).defaults["fused"]
    explicit = make_adamw(params, {"lr": 0.1, "weight_decay": 0.01, "fused": False}).defaults
    assert explicit["fused"] is False and (explicit["lr"], explicit["weight_decay"]) == (0.1, 0.01)


def test_loader_workers_are_shared_between_the_processes_of_a_machine(monkeypatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)  # a SLURM job's own CPU count would answer
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert default_num_workers() == 15
    assert default_num_workers(processes=2) == 7
    assert default_num_workers(processes=8) == 1
    assert default_num_workers(model_on_cpu=True) == 4  # the model's threads keep the other 12
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_num_workers(model_on_cpu=True) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert default_num_workers() == 0


@pytest.mark.parametrize("bound", [True, False])
def test_a_slurm_task_takes_its_cpus_per_task_whether_bound_to_them_or_not(monkeypatch, bound) -> None:
    """8 GPU tasks per node, 8 CPUs each: 7 workers per task. With SLURM's CPU binding, the task's affinity
    is its own 8 CPUs, which ffd used to divide by 8 processes again (no workers: the GPU starved)."""
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    cpus = set(range(8)) if bound else set(range(64))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus)
    assert default_num_workers(processes=8) == 7
    monkeypatch.delenv("SLURM_STEP_ID")  # an sbatch script itself, not a task srun started
    assert default_num_workers(processes=8) == (0 if bound else 7)


def test_augment_on_gpu_leaves_workers_decoding_and_augments_train_batches_after_transfer(tmp_path) -> None:
    root = generate(tmp_path, image_size=16, train=8, val=4, test=4, progress=False)
    module = FacesDataModule(str(root), image_size=16, batch_size=8, num_workers=0, augment_on="gpu")
    module.setup("fit")
    assert isinstance(module.train_dataloader().dataset.transform, ResizeIfNeeded)  # decode + resize only
    batch = next(iter(module.val_dataloader()))
    original = batch["image"].clone()
    module.trainer = SimpleNamespace(training=False, num_devices=1)
    assert torch.equal(module.on_after_batch_transfer(dict(batch), 0)["image"], original)
    module.trainer = SimpleNamespace(training=True, num_devices=1)
    torch.manual_seed(0)
    augmented = module.on_after_batch_transfer(dict(batch), 0)["image"]
    assert augmented.dtype == torch.uint8 and augmented.shape == original.shape
    assert not torch.equal(augmented, original)
    with pytest.raises(UserError, match=r"data\.augment_on=tpu must be cpu or gpu"):
        FacesDataModule(str(root), augment_on="tpu")


class _CountingBar(ProgressBar):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reads = 0
        self.loss_reads = 0

    def get_metrics(self, trainer, pl_module):
        self.reads += 1
        return super().get_metrics(trainer, pl_module)

    def _read_train_metrics(self, trainer) -> None:
        self.loss_reads += 1
        super()._read_train_metrics(trainer)


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)  # no prog_bar: the bar reads it itself
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_model_summary_counts_mixed_precision_weights_without_a_warning(recwarn) -> None:
    """bf16-mixed keeps float32 weights, the size Lightning counts: its warning that the size "will not be
    accurate" was printed at the start of every trainer=gpu run."""
    from lightning.pytorch.demos.boring_classes import BoringModel

    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[ModelSummary()],
    )
    trainer.fit(BoringModel())
    assert not [w for w in recwarn if "model summary" in str(w.message)], [str(w.message) for w in recwarn]


def test_progress_bar_shows_the_training_loss_read_every_n_steps_not_every_step(tmp_path) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 2)), batch_size=1)
    bar = _CountingBar(metrics_every_n_steps=4)
    trainer = L.Trainer(
        max_epochs=1, callbacks=[bar], logger=False, enable_checkpointing=False, default_root_dir=tmp_path
    )
    model = _Tiny()
    trainer.fit(model, data)
    # 12 steps: at steps 4, 8 and 12, plus once at the end of the epoch (the base bar reads every step).
    assert (bar.reads, bar.loss_reads) == (4, 4), (bar.reads, bar.loss_reads)
    shown = bar.get_metrics(trainer, model)["train/loss"]
    assert isinstance(shown, float) and shown == pytest.approx(float(trainer.callback_metrics["train/loss"]))


@pytest.mark.parametrize(("max_epochs", "expected"), [(-1, "Epoch 3"), (5, "Epoch 3/4")])
def test_the_bar_of_a_run_bounded_by_steps_has_no_epoch_total(max_epochs, expected) -> None:
    """Lightning's bar said "Epoch 0/-2" for max_epochs=-1 (ffd.bench's loop, any max_steps run)."""
    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs)
    assert bar._get_train_description(3).strip() == expected


def test_bench_prints_every_measurement_with_the_loop_to_step_ratio(tmp_path) -> None:
    result = run_ffd(
        "ffd.bench",
        "models=vit",  # Hydra reads a bare value as a string: one model, not three letters
        "trainer_config=cpu",
        "image_size=16",
        "batch_size=4",
        "steps=2",
        "warmup_steps=4",  # step 0, 2 audited for host syncs, 1 profiled
        "data_batches=2",
        "augment_on=gpu",
        "profile_steps=1",
        "train_overrides=['data.num_workers=0','model.net.dim=16','model.net.depth=1']",
        root=tmp_path,
    )
    (run,) = (tmp_path / "outputs" / "bench").iterdir()
    rows = json.loads((run / "bench.json").read_text())["rows"]
    parts = [row["part"] for row in rows]
    assert parts == ["a_step", "b_data", "b_gpu_augment", "c_loop"], rows
    assert all(row["images_per_s"] > 0 and "error" not in row for row in rows), rows
    table = (run / "bench.md").read_text()
    ratio = rows[3]["images_per_s"] / rows[0]["images_per_s"]
    assert f"| {ratio:.2f} |" in table
    assert "(a) bare step" in table and "(c) full ffd.train loop" in table
    assert "Settings: `models=[vit] trainer_config=cpu image_size=16 batch_size=4 steps=2" in table
    assert (run / "profile_vit_a_step.txt").read_text().startswith("1 steps profiled")
    assert (run / "profile_vit_c_loop.txt").read_text().startswith("1 steps profiled")
    assert rows[3]["host_syncs_per_step"] == 0 and f"| {ratio:.2f} | 0 |" in table, rows[3]
    # The timed loop writes no checkpoint (Lightning's default one included) and stops before epoch end.
    assert not list(run.rglob("*.ckpt"))
    # The console: the settings and each measurement in words (they were Python dicts with a PosixPath),
    # and no data set table (it was shown by each of the four data and loop measurements: the same files).
    console = result.stdout + result.stderr
    assert "Bench settings: models=[vit] trainer_config=cpu image_size=16 batch_size=4 steps=2" in console
    assert "PosixPath" not in console and "{'" not in console, console
    assert f"vit, (a) bare step: {bench_table.rate(rows[0])}" in console
    assert "real (0)" not in console, console
    # Bench runs stay out of the user's TensorBoard (outputs/), and Lightning's warning about a logging
    # interval longer than the bench's short epoch is not printed.
    assert not list((tmp_path / "outputs").rglob("events.out.tfevents*"))
    assert "logging interval" not in console, console


def test_a_data_row_counts_its_loader_workers_in_good_english() -> None:
    row = {"model": "vit", "part": "b_data", "augment_on": "cpu", "images_per_s": 50.0}
    notes = [bench_table.table_rows([{**row, "workers": workers}])[0][6] for workers in (0, 1, 2)]
    assert notes == ["0 loader workers", "1 loader worker", "2 loader workers"]


def test_the_loop_peak_memory_covers_the_warmup_steps(monkeypatch, tmp_path) -> None:
    """CUDA graphs take their memory while they are recorded, in the warm-up: the bench's peak for the loop
    must not be counted from the first timed step, or a 2.9 GiB loop reads 0.3 GiB."""
    resets: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: resets.append(1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 3 * 2**30)
    timer = bench_measure.StepTimer(warmup_steps=2, result_path=str(tmp_path / "timer.json"))
    trainer = SimpleNamespace(global_step=0, max_steps=4)
    batch = {"label": torch.zeros(8)}
    for step in range(4):
        trainer.global_step = step
        timer.on_train_batch_start(trainer, None, batch, step)
        trainer.global_step = step + 1
        timer.on_train_batch_end(trainer, None)
    timer.on_train_end(trainer, None)
    result = json.loads((tmp_path / "timer.json").read_text())
    assert resets == [] and result["peak_gib"] == 3.0
    assert result["images"] == 16  # the two timed steps' batches


def test_bench_lists_where_the_host_syncs_come_from(tmp_path) -> None:
    site = dict(op="_local_scalar_dense", site="ffd/x.py:3 (f)", per_step=0.105263, why="reads a value")
    rows = [
        {"model": "vit", "part": "a_step", "images_per_s": 100.0},
        {
            "model": "vit",
            "part": "c_loop",
            "augment_on": "gpu",
            "images_per_s": 80.0,
            "host_syncs_per_step": 0.105263,
            "host_sync_sites": [site],
        },
    ]
    bench_table.write_tables(rows, tmp_path, "title", "models=[vit]")
    table = (tmp_path / "bench.md").read_text()
    assert "| 0.80 | 0.11 |" in table  # two significant digits, not 0.105263
    assert "- vit, augment on gpu: 0.11/step `_local_scalar_dense` at ffd/x.py:3 (f): reads a value" in table


def test_a_loop_is_compared_with_the_bare_step_of_the_same_settings() -> None:
    settings = {"precision": "bf16-mixed", "channels_last": True}
    rows = [
        {"model": "vit", "part": "a_step", "images_per_s": 100.0, **settings, "compile": True},
        {
            "model": "vit",
            "part": "a_step_variant",
            "images_per_s": 200.0,
            **settings,
            "compile": "reduce-overhead",
        },
        {
            "model": "vit",
            "part": "c_loop",
            "augment_on": "gpu",
            "images_per_s": 90.0,
            **settings,
            "compile": True,
        },
        {
            "model": "vit",
            "part": "c_loop",
            "augment_on": "gpu",
            "images_per_s": 150.0,
            **settings,
            "compile": "reduce-overhead",
            "variant": "callbacks.speed.compile={mode:reduce-overhead}",
        },
        {
            "model": "vit",
            "part": "c_loop",
            "augment_on": "gpu",
            "images_per_s": 50.0,
            **settings,
            "compile": False,
            "variant": "callbacks.speed.compile=false",
        },
    ]
    ratios = [row[3] for row in bench_table.table_rows(rows)]
    assert ratios == ["", "", "0.90", "0.75", "0.50"]  # the last has no bare step of its own: the default's


def test_each_loop_is_compared_with_the_bare_step_of_its_own_run_and_sizes() -> None:
    """models=[vit,vit]: each loop against the bare step measured just before it; a loop at another
    batch size has no bare step of its own and says which one it was compared with."""
    size = {"image_size": 64, "batch_size": 16}
    rows = [
        {"model": "vit", "part": "a_step", "images_per_s": 100.0, **size},
        {"model": "vit", "part": "c_loop", "augment_on": "gpu", "images_per_s": 90.0, **size},
        {"model": "vit", "part": "a_step", "images_per_s": 200.0, **size},
        {"model": "vit", "part": "c_loop", "augment_on": "gpu", "images_per_s": 180.0, **size},
        {
            "model": "vit",
            "part": "c_loop",
            "augment_on": "gpu",
            "images_per_s": 100.0,
            "image_size": 64,
            "batch_size": 32,
            "variant": "data.batch_size=32",
        },
    ]
    table = bench_table.table_rows(rows)
    assert [row[3] for row in table] == ["", "0.90", "", "0.90", "0.50"]
    assert "default bare step" in table[4][6]


def compose_bench(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="bench", overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["steps=0", "batch_size=-2"], "steps=0 must be a whole number, at least 1; batch_size=-2 must be"),
        (["data_batches=0"], "data_batches=0 must be a whole number, at least 1"),
        (["files=1"], "files=1 must be a whole number, at least 2"),
        (["trainer_config=gpu"], "trainer_config=gpu needs a CUDA GPU"),
        (["step_variants=[{precision:bf16-mixed}]"], "must set exactly precision, channels_last, compile"),
    ],
)
def test_bench_options_that_cannot_work_are_one_error_before_measuring(monkeypatch, overrides, message):
    """These ran and printed 'failed' rows, or a TypeError, and exited 0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as error:
        bench.resolve_sizes(compose_bench(*overrides))
    assert message in str(error.value)


def test_a_bad_loop_variant_fails_before_the_first_measurement(monkeypatch, tmp_path):
    """It was composed after the main loop had been measured, and the error then lost bench.md."""
    from hydra.errors import ConfigCompositionException

    measured = []
    monkeypatch.setattr(bench, "bare_step", lambda *args, **kwargs: measured.append(args) or {})
    cfg = compose_bench("trainer_config=cpu", "parts=[step,loop]", "loop_variants=[['bogus.key=1']]")
    bench.resolve_sizes(cfg)
    with (
        initialize_config_dir(config_dir=CONF, version_base="1.3"),
        pytest.raises(ConfigCompositionException),
    ):
        bench.run_bench(cfg, tmp_path)  # within hydra.main, as the bench runs
    assert measured == []


def test_a_failed_row_names_the_cause_and_slow_rates_keep_their_digits(tmp_path) -> None:
    def fails() -> dict:
        try:
            raise ValueError("image_size=30 is not a multiple of the patch size 8")
        except ValueError as cause:
            raise RuntimeError("Error in call to target 'ffd.models.vit.VisionTransformer':") from cause

    results: list = []
    bench._attempt(results, {"model": "vit", "part": "a_step"}, fails)
    assert results[0]["error"] == "ValueError: image_size=30 is not a multiple of the patch size 8"
    rows = bench_table.table_rows(
        [
            {"model": "densenet", "part": "a_step", "images_per_s": 0.4},
            {"model": "densenet", "part": "c_loop", "augment_on": "cpu", "images_per_s": 0.8},
        ]
    )
    assert [row[2] for row in rows] == ["0.4", "0.8"] and rows[1][3] == "2.00"
    assert bench_table.table_rows(results)[0][2] == "failed"


def test_a_loop_run_never_reads_an_earlier_runs_host_sync_count(monkeypatch, tmp_path) -> None:
    """A fixed hydra.run.dir (benchmarks/gpu_bench.sh) kept host_syncs.json of a run with the audit on."""
    import ffd.train

    (tmp_path / "host_syncs.json").write_text(json.dumps({"per_step": 11, "sites": []}))
    monkeypatch.setattr(
        ffd.train,
        "train",
        lambda cfg: (tmp_path / "timer.json").write_text(json.dumps({"images_per_s": 5.0})),
    )
    result = bench.full_loop(OmegaConf.create({}), tmp_path)
    assert result == {"images_per_s": 5.0}
