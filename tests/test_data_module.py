"""FacesDataModule: dict batches, train-only augmentation, decode-time bad files, summary, config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DistributedSampler

from ffd.data import datamodule
from ffd.data.datamodule import FacesDataModule
from ffd.data.dataset import collate_faces
from ffd.data.index import index_dataset
from ffd.data.synthetic import generate
from ffd.errors import DatasetLayoutError, UserError
from ffd.images import read_rgb

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated set: 12 train, 6 val, 6 test images of 16 px, half real, half fake."""
    return generate(tmp_path_factory.mktemp("faces"), image_size=16, train=12, val=6, test=6, progress=False)


def module(root: Path, **kwargs) -> FacesDataModule:
    options = {"image_size": 16, "batch_size": 4, "num_workers": 0} | kwargs
    return FacesDataModule(str(root), **options)


class Processes:
    """DDP's broadcast and all-reduce between processes that are set up one after another, rank 0 first.

    `others_agree` is the all-reduce's answer from the processes not simulated."""

    def __init__(self, others_agree: bool = True) -> None:
        self.sent: object = None
        self.others_agree = others_agree

    def broadcast(self, obj: object, src: int = 0) -> object:
        if obj is not None:
            self.sent = obj
        return self.sent

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision and self.others_agree


def ddp_trainer(processes: int, rank: int, shared: Processes | None = None) -> SimpleNamespace:
    """What the data module reads of a DDP trainer."""
    return SimpleNamespace(world_size=processes, global_rank=rank, strategy=shared or Processes())


def test_batches_are_dicts_of_uint8_images_and_float_labels(faces: Path) -> None:
    dm = module(faces)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 16, 16)
    assert batch["label"].dtype == torch.float32 and batch["label"].shape == (4,)
    assert len(batch["path"]) == 4 and batch["bad"] == []
    for path, label in zip(batch["path"], batch["label"], strict=True):
        assert Path(path).parent.name == ("real", "fake")[int(label)]


def test_train_shuffles_and_drops_last_only_when_larger_than_a_batch(faces: Path) -> None:
    dm = module(faces, batch_size=5)
    dm.setup("fit")
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.drop_last and len(train) == 2  # 12 images, batches of 5
    assert not val.drop_last and len(val) == 2  # 6 images: 5 + 1
    torch.manual_seed(0)
    first = [p for batch in train for p in batch["path"]]
    assert first != sorted(first)
    assert [p for batch in val for p in batch["path"]] == [p for p, _ in dm.index.samples["val"]]
    small = module(faces, batch_size=64)
    small.setup("fit")
    assert not small.train_dataloader().drop_last
    # Under DDP each process gets its share of the 12: batches of 5 would leave 2 processes 1 batch each
    # (6 images), 3 processes none (4 images), so the last batch is kept there.
    for processes, drops in ((2, True), (3, False)):
        shared = module(faces, batch_size=5)
        shared.trainer = ddp_trainer(processes, rank=0)
        shared.setup("fit")
        assert shared.train_dataloader().drop_last is drops, processes


@pytest.mark.parametrize("processes", [4, 5])
def test_under_ddp_the_evaluation_loaders_mark_the_samplers_repeats(faces: Path, processes: int) -> None:
    """6 validation images: Lightning's sampler pads them to 8 on 4 processes, 10 on 5. The loaders keep
    its shares and order and mark the repeats, so that over all processes each image is scored once."""
    scored, repeats, shared = [], 0, Processes()
    for rank in range(processes):
        dm = module(faces, batch_size=4)
        dm.trainer = ddp_trainer(processes, rank, shared)
        dm.setup("validate")
        loader = dm.val_dataloader()
        lightnings = DistributedSampler(range(6), num_replicas=processes, rank=rank, shuffle=False)
        assert [index for index, _ in loader.sampler] == list(lightnings)
        for batch in loader:
            unique = len(batch["path"]) - batch["repeats"]
            scored += batch["path"][:unique]
            repeats += batch["repeats"]
    assert sorted(scored) == sorted(path for path, _ in dm.index.samples["val"])
    assert repeats == -6 % processes


def test_collate_puts_the_samplers_repeats_last_and_counts_them() -> None:
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    samples = [
        {"image": image, "label": 0, "path": "copy.jpg", "repeat": True},
        {"path": "bad.jpg", "bad": "truncated"},
        {"image": image, "label": 1, "path": "own.jpg", "repeat": False},
    ]
    batch = collate_faces(samples, image_size=16)
    assert batch["path"] == ["own.jpg", "copy.jpg"] and batch["label"].tolist() == [1.0, 0.0]
    assert batch["repeats"] == 1 and batch["bad"] == [("bad.jpg", "truncated")]


def test_augmentation_applies_to_the_training_split_only(faces: Path) -> None:
    dm = module(faces, batch_size=12)
    dm.setup("fit")
    torch.manual_seed(0)
    train = next(iter(dm.train_dataloader()))
    assert any(
        not torch.equal(image, read_rgb(path))
        for image, path in zip(train["image"], train["path"], strict=True)
    )
    val = next(iter(dm.val_dataloader()))
    assert all(
        torch.equal(image, read_rgb(path)) for image, path in zip(val["image"], val["path"], strict=True)
    )
    plain = module(faces, batch_size=12, augment=False)
    plain.setup("fit")
    batch = next(iter(plain.train_dataloader()))
    assert all(
        torch.equal(image, read_rgb(path)) for image, path in zip(batch["image"], batch["path"], strict=True)
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_files_are_dropped_and_listed_at_decode_time(tmp_path: Path, num_workers: int) -> None:
    root = generate(tmp_path, image_size=16, train=4, val=4, test=4, progress=False)
    good = root / "valid" / "real" / "000000.jpg"
    truncated = root / "valid" / "real" / "000001.jpg"
    truncated.write_bytes(good.read_bytes()[:60])
    (root / "valid" / "fake" / "empty.jpg").write_bytes(b"")
    (root / "valid" / "fake" / "text.jpg").write_text("not a jpeg")
    dm = module(root, batch_size=8, num_workers=num_workers, persistent_workers=False)
    dm.setup("validate")
    assert sorted(Path(p).name for p, _ in dm.bad_files) == ["empty.jpg", "text.jpg"]
    batches = list(dm.val_dataloader())
    bad = [item for batch in batches for item in batch["bad"]]
    assert [Path(p) for p, _ in bad] == [truncated]
    assert bad[0][1] == "cannot be decoded: truncated or corrupt JPEG"
    assert sum(len(b["path"]) for b in batches) == 3 and str(truncated) not in batches[0]["path"]


def test_a_batch_of_only_unreadable_files_is_empty() -> None:
    batch = collate_faces([{"path": "a.jpg", "bad": "why"}], image_size=16)
    assert batch["image"].shape == (0, 3, 16, 16) and batch["image"].dtype == torch.uint8
    assert batch["label"].shape == (0,) and batch["path"] == [] and batch["bad"] == [("a.jpg", "why")]


def test_summary_is_json_and_the_table_is_printed(faces: Path, capsys: pytest.CaptureFixture) -> None:
    (faces / "train" / "fake" / "zero.jpg").write_bytes(b"")
    try:
        dm = module(faces)
        dm.setup("fit")
    finally:
        (faces / "train" / "fake" / "zero.jpg").unlink()
    summary = json.loads(json.dumps(dm.summary()))
    assert summary["root"] == str(faces) and summary["source"] == "folders" and summary["image_size"] == 16
    assert summary["splits"]["train"] == {"real": 6, "fake": 6, "skipped": 1}
    assert summary["skipped_files"] == [[str(faces / "train" / "fake" / "zero.jpg"), "empty file (0 bytes)"]]
    printed = capsys.readouterr().out
    assert "train" in printed and "skipped" in printed and "fake (1)" in printed


def test_limit_per_split_keeps_the_first_n_per_class(faces: Path) -> None:
    dm = module(faces, limit_per_split=2)
    dm.setup()
    assert dm.index.counts() == {split: {0: 2, 1: 2} for split in ("train", "val", "test")}
    assert [Path(p).name for p, _ in dm.index.samples["train"]] == ["000000.jpg", "000001.jpg"] * 2


def test_imbalance_warning(tmp_path: Path, caplog) -> None:
    root = generate(tmp_path, image_size=16, train=10, val=4, test=4, progress=False)
    for path in sorted((root / "train" / "fake").iterdir())[:3]:
        path.unlink()
    module(root).setup("fit")
    assert "split 'train' is imbalanced (5 real, 2 fake)" in caplog.text


@pytest.mark.parametrize("missing", ["real", "fake"])
def test_a_one_class_test_split_will_do_for_evaluation_only(tmp_path: Path, caplog, missing: str) -> None:
    """ffd.eval on the faces of another generator (fakes only): accuracy is then the share caught. A
    training run's test split still needs both classes."""
    root = generate(tmp_path, image_size=16, train=4, val=4, test=4, progress=False)
    shutil.rmtree(root / "test" / missing)
    with pytest.raises(DatasetLayoutError, match=f"split 'test' has no {missing} images"):
        module(root).setup("test")
    evaluation = module(root)
    evaluation.one_class_test = True
    evaluation.setup("test")
    kept = "fake" if missing == "real" else "real"
    assert f"split 'test' holds {kept} images only: accuracy is the share called {kept}" in caplog.text
    assert {label for _, label in evaluation.index.samples["test"]} == {1 if kept == "fake" else 0}


def test_missing_root_error_from_the_module() -> None:
    with pytest.raises(FileNotFoundError, match="data=synthetic"):
        FacesDataModule(None, num_workers=0).setup("fit")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "data.batch_size=0 must be a whole number, at least 1"),
        ({"num_workers": -1}, "data.num_workers=-1 must be null (from the CPU count) or 0 or more"),
        (
            {"batch_size": 2.5, "augment_on": "gpus"},
            "data.batch_size=2.5 must be a whole number, at least 1"
            " (images per device); data.augment_on=gpus must be cpu or gpu.",
        ),
    ],
)
def test_loader_options_that_cannot_work_are_refused_before_indexing(faces: Path, options, message) -> None:
    """torch's DataLoader refused these only after the data set was indexed and the model built."""
    from ffd.errors import UserError

    with pytest.raises(UserError) as error:
        FacesDataModule(str(faces), **options)
    assert message in str(error.value)


def test_synthetic_config_generates_and_loads(tmp_path: Path) -> None:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            overrides=[
                "+paths=default",
                "+data=synthetic",
                f"paths.root_dir={tmp_path}",
                "data.synthetic.image_size=16",
                "data.synthetic.train=8",
                "data.synthetic.val=4",
                "data.synthetic.test=4",
                "data.num_workers=0",
            ]
        )
    assert cfg.data.root == f"{tmp_path}/data/synthetic/s16_8-4-4_seed0" and cfg.data.image_size == 16
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.index.counts()["train"] == {0: 4, 1: 4}
    assert next(iter(dm.train_dataloader()))["image"].shape[-1] == 16


def test_each_process_draws_its_own_augmentations(faces: Path) -> None:
    """seed_everything seeds every DDP process alike; setup("fit") offsets the seed by the rank."""
    draws = []
    shared = Processes()
    for rank in (0, 1):
        torch.manual_seed(42)
        dm = module(faces)
        dm.trainer = ddp_trainer(2, rank, shared)
        dm.setup("fit")
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])
    torch.manual_seed(42)
    module(faces).setup("fit")  # one process: the seed is left as it is
    assert torch.initial_seed() == 42


def test_under_ddp_process_0_indexes_and_the_others_receive_its_index(faces: Path, monkeypatch) -> None:
    listings = []
    monkeypatch.setattr(datamodule, "index_dataset", lambda *a: listings.append(a) or index_dataset(*a))
    shared, modules = Processes(), []
    for rank in range(3):
        dm = module(faces, limit_per_split=2)
        dm.trainer = ddp_trainer(3, rank, shared)
        dm.setup("fit")
        modules.append(dm)
    assert len(listings) == 1
    assert all(dm.index.samples == modules[0].index.samples for dm in modules)
    assert len(modules[2].index.samples["train"]) == 4  # limit_per_split applied once, by process 0


def test_under_ddp_every_process_raises_process_0s_indexing_error(tmp_path: Path, monkeypatch) -> None:
    listings = []
    monkeypatch.setattr(datamodule, "index_dataset", lambda *a: listings.append(a) or index_dataset(*a))
    shared, messages = Processes(), []
    for rank in (0, 1):
        dm = module(tmp_path)  # an existing folder without split folders
        dm.trainer = ddp_trainer(2, rank, shared)
        with pytest.raises(DatasetLayoutError, match="no split folders") as error:
            dm.setup("fit")
        messages.append(str(error.value))
    assert messages[0] == messages[1] and len(listings) == 1


def test_under_ddp_a_process_that_cannot_see_process_0s_files_says_so(faces: Path, tmp_path: Path) -> None:
    """Nodes that hold the data at different paths: every process stops, the one that cannot see the files
    names the first it missed and its host."""
    index = index_dataset(faces)
    index.samples = {
        split: [(str(tmp_path / Path(p).name), y) for p, y in rows] for split, rows in index.samples.items()
    }
    shared = Processes()
    shared.sent = index
    dm = module(faces)
    dm.trainer = ddp_trainer(2, 1, shared)
    with pytest.raises(
        DatasetLayoutError, match=f"{tmp_path}/.* is missing for process 1 on .*same path"
    ) as own:
        dm.setup("fit")
    assert own.value.own_process  # printed by process 1, not left to process 0
    first = module(faces)
    first.trainer = ddp_trainer(2, 0, Processes(others_agree=False))
    with pytest.raises(
        DatasetLayoutError, match=r"^A process cannot see the files that process 0 indexed"
    ) as shared:
        first.setup("fit")
    assert not shared.value.own_process


def printed_rows(printed: str) -> list[str]:
    """The first cell of each body row of the data set table (rich draws them between │ bars)."""
    return [line.split("│")[1].strip() for line in printed.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("room", [2, 100])
def test_a_long_root_is_printed_whole_above_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    """The table's title wrapped at the table's width (about 49 columns), in the middle of the path. Now
    the path gets a line of its own when the console is too narrow for the heading and it, else one line.
    """
    root = generate(tmp_path / "faces", image_size=16, train=2, val=2, test=2, progress=False)
    monkeypatch.setenv("COLUMNS", str(len(str(root)) + room))  # rich's console width off a terminal
    module(root).setup("test")
    lines = capsys.readouterr().out.splitlines()
    (with_root,) = [line for line in lines if str(root) in line]
    assert "from folders" in (with_root if room == 100 else lines[lines.index(with_root) - 1])


def test_a_split_with_no_files_is_left_out_of_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """Class folders read as the test split printed train and val rows of zeros: a broken-looking set. A
    split with only skipped files stays (here before the error about it), and the metrics' data block
    still has every split."""
    generated = generate(tmp_path / "generated", image_size=16, train=2, val=2, test=2, progress=False)
    shutil.move(generated / "test", tmp_path / "classes")
    with caplog.at_level("INFO", logger="ffd.record"):
        tested = module(tmp_path / "classes")
        tested.one_class_test = True
        tested.setup("test")
    assert printed_rows(capsys.readouterr().out) == ["test"]
    assert "test 1 real, 1 fake" in caplog.text and "train 0 real" not in caplog.text
    assert tested.summary()["splits"]["train"] == {"real": 0, "fake": 0, "skipped": 0}
    shutil.rmtree(generated / "valid")
    (generated / "valid" / "real").mkdir(parents=True)
    (generated / "valid" / "real" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match="split 'val' is empty"):  # the table, then the error
        module(generated).setup("validate")
    assert printed_rows(capsys.readouterr().out) == ["train", "val"]


def test_a_synthetic_set_drawn_at_another_size_than_data_image_size_is_refused(tmp_path: Path) -> None:
    """data=synthetic data.image_size=128 trained on the 64 px set enlarged (AUROC 0.99), and ffd.eval,
    which draws the set at the model's size, then scored a fresh 128 px set (AUROC 0.64)."""
    synthetic = {"image_size": 64, "train": 4, "val": 2, "test": 2, "seed": 0}
    with pytest.raises(UserError, match=r"data.image_size=128 but .* data.synthetic.image_size=64.*Set data"):
        FacesDataModule(str(tmp_path / "s"), image_size=128, synthetic=synthetic)
    assert FacesDataModule(str(tmp_path / "s"), image_size=64, synthetic=synthetic).image_size == 64
