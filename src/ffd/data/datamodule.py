"""FacesDataModule: index the data root, decode with torchvision.io, augment on uint8, batch as dicts.

A batch is ``{"image": uint8 (B, 3, S, S), "label": float32 (B,), "path": list[str], "bad": list[(path,
reason)], "repeats": int}``. A file that fails to decode (truncated, corrupt) never stops a run: the dataset
returns its reason instead of an image, the collate function drops it and puts the reason in
``batch["bad"]`` for the LightningModule to collect; B may be 0. The last ``repeats`` images of a batch are
copies that a distributed sampler added to even out the processes' shares: they are scored by none of the
metrics.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch.utils.data import DataLoader

from ffd import LABELS, record
from ffd.data import synthetic as synthetic_set
from ffd.data.dataset import FaceImages, MarkedPaddingSampler, collate_faces
from ffd.data.gpu_augment import BatchAugment
from ffd.data.index import SPLITS, DatasetIndex, DatasetLayoutError, check_root, index_dataset
from ffd.data.prefetch import PrefetchLoader
from ffd.data.transforms import check_blur_jpeg_prob, eval_transform, train_transform, worker_steps
from ffd.data.workers import available_cpus, check_loader_settings, default_num_workers
from ffd.errors import UserError

IMBALANCE = 0.6  # warn when one class is more than this fraction of a split
log = logging.getLogger(__name__)


class FacesDataModule(L.LightningDataModule):
    """Real (0) vs fake (1) face images from split/class folders or the Kaggle CSVs.

    `synthetic` (image_size, train, val, test, seed) generates the demo set at `root` in prepare_data.
    `augment`: True for the reference augmentation, False for none, or a mapping of
    `ffd.data.transforms.train_transform` arguments, `blur_jpeg_prob` included (CNNDetection's blur +
    JPEG, done in the workers on either path). `augment_on`: "cpu" augments each image in the loader
    workers; "gpu" augments whole training batches on the device after transfer
    (`ffd.data.gpu_augment.BatchAugment`, per-image random parameters), which frees the workers for
    decoding when the CPUs cannot keep up with the GPU; `augment_output` "float32" makes it hand the model
    the same whole values as floats, skipping a cast to uint8 and back. `prefetch`: the training loader
    moves (and with augment_on "gpu" augments) the next batch while the current step runs, on a second CUDA
    stream on a GPU (`ffd.data.prefetch.PrefetchLoader`); elsewhere one batch ahead in order.
    `num_workers`: null derives it from the CPU count and the number of training processes on this
    machine. `limit_per_split` keeps the first N images per class per split (debugging, tests).
    `show_table=false` keeps the images-per-split table off the console (ffd.bench sets up the same files
    for each measurement); the run's log still gets the counts.
    """

    def __init__(
        self,
        root: str | None,
        image_size: int = 256,
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool = True,
        augment: bool | Mapping[str, Any] = True,
        augment_on: str = "cpu",
        split_dirs: Mapping[str, Sequence[str]] | None = None,
        class_dirs: Mapping[int, Sequence[str]] | None = None,
        use_csv: str | bool = "auto",
        synthetic: Mapping[str, Any] | None = None,
        persistent_workers: bool = True,
        limit_per_split: int | None = None,
        show_table: bool = True,
        prefetch: bool = False,
        augment_output: str = "uint8",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the entry points log the whole composed config
        self.root = root
        self.image_size = image_size
        self.batch_size = batch_size
        self._num_workers = num_workers
        self.pin_memory = pin_memory
        check_loader_settings(batch_size, num_workers, augment_on)
        self.augment = augment
        self.augment_on = augment_on
        self.blur_jpeg_prob = augment.get("blur_jpeg_prob", 0.0) if isinstance(augment, Mapping) else 0.0
        check_blur_jpeg_prob(self.blur_jpeg_prob)
        on_gpu = augment and augment_on == "gpu"
        self.batch_augment = BatchAugment(**self._augment_args(), output=augment_output) if on_gpu else None
        self.split_dirs, self.class_dirs, self.use_csv = split_dirs, class_dirs, use_csv
        self.synthetic = dict(synthetic) if synthetic else None
        if self.synthetic and self.synthetic.get("image_size", image_size) != image_size:
            drawn = self.synthetic["image_size"]
            raise UserError(
                f"data.image_size={image_size} but the synthetic set is drawn at "
                f"data.synthetic.image_size={drawn}: resizing it blurs the upsampling trace its fakes carry, "
                f"and ffd.eval of the model would draw a new set at {image_size} px, on which it scores "
                f"otherwise. Set data.synthetic.image_size={image_size} (data.image_size follows it) or "
                f"leave data.image_size at {drawn}."
            )
        if not self.synthetic:  # before the model is built: its ImageNet download can take a while
            check_root(root)
        self.persistent_workers = persistent_workers
        self.limit_per_split = limit_per_split
        self.show_table = show_table
        self.prefetch = prefetch
        self.index: DatasetIndex | None = None
        # The splits that must hold both classes before fitting: ffd.train adds "test" when it tests after
        # fitting, so that a missing test split stops the run before the training, not after it.
        self.splits_for_fit: tuple[str, ...] = ("train", "val")
        # ffd.eval tests on a split of one class too (the faces of another generator: accuracy is then the
        # share caught); a training run's test split needs both.
        self.one_class_test = False

    def prepare_data(self) -> None:
        if self.synthetic:
            synthetic_set.generate(self.root, **self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        if self._processes() > 1 and stage == "fit":
            # Every process was seeded alike (seed_everything(seed)): without this, image k of each
            # process's batch would get the same flip, angle, zoom and contrast. The sampler keeps its
            # own seed, so the processes still split the data as Lightning intends.
            torch.manual_seed(torch.initial_seed() + self.trainer.global_rank)
        if self.index is None:
            self.index = self._shared_index()
            self.print_table()
        needed = {"fit": self.splits_for_fit, "validate": ("val",), "test": ("test",), "predict": ("test",)}
        self.index.require(needed.get(stage, SPLITS), ("test",) if self.one_class_test else ())
        for split in needed.get(stage, SPLITS):
            self.warn_about_classes(split)

    @rank_zero_only
    def warn_about_classes(self, split: str) -> None:
        """Warn when `split` holds one class only, or one class for more than IMBALANCE of it."""
        counts = self.index.counts()[split]
        if not min(counts.values()):
            only = LABELS[max(counts, key=counts.get)]
            log.warning(
                "%s: split '%s' holds %s images only: accuracy is the share called %s; AUROC and AUPRC "
                "need both classes and are left out.",
                self.index.root,
                split,
                only,
                only,
            )
        elif max(counts.values()) > IMBALANCE * sum(counts.values()):
            log.warning(
                "%s: split '%s' is imbalanced (%d real, %d fake); accuracy will be misleading, watch AUROC "
                "and per-class recall.",
                self.index.root,
                split,
                counts[0],
                counts[1],
            )

    def _index(self) -> DatasetIndex:
        if self.synthetic:  # no-op when prepare_data made it; lets a plain setup() call work too
            synthetic_set.generate(self.root, **self.synthetic)
        index = index_dataset(self.root, self.split_dirs, self.class_dirs, self.use_csv)
        if self.limit_per_split is not None:
            index.samples = {split: self._first(rows) for split, rows in index.samples.items()}
        return index

    def _shared_index(self) -> DatasetIndex:
        """Process 0 indexes the data root and sends the index to the others.

        Under DDP every process then splits the same list (a file added or removed while they listed it
        would otherwise shift one process's share), and a tree of 140,000 files is read once, not once per
        GPU. An error in process 0 is raised by every process, which would otherwise wait for an index.
        """
        if self._processes() == 1:
            return self._index()
        strategy, rank = self.trainer.strategy, self.trainer.global_rank
        sent: DatasetIndex | Exception | None = None
        if rank == 0:
            try:
                sent = self._index()
            except Exception as error:  # raised below, in every process
                sent = error
        index = strategy.broadcast(sent, src=0)
        if isinstance(index, Exception):
            raise index
        unseen = next(
            (rows[0][0] for rows in index.samples.values() if rows and not os.path.exists(rows[0][0])), None
        )
        if not strategy.reduce_boolean_decision(unseen is None, all=True):
            here = f"{unseen} is missing for process {rank} on {socket.gethostname()}. " if unseen else ""
            error = DatasetLayoutError(
                f"{here}A process cannot see the files that process 0 indexed under {index.root}. Every "
                "node must see the data at the same path: put it on a filesystem all nodes mount, or copy "
                "it to the same path on each node, and point data.root there."
            )
            error.own_process = bool(unseen)  # printed by this process too, not by process 0 alone
            raise error
        return index

    def _first(self, rows: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The first `limit_per_split` rows of each class, in index order."""
        kept = {label: [row for row in rows if row[1] == label][: self.limit_per_split] for label in LABELS}
        return kept[0] + kept[1]

    @property
    def bad_files(self) -> list[tuple[str, str]]:
        """Files skipped at index time (empty, not images), as (path, reason)."""
        return list(self.index.skipped) if self.index else []

    def summary(self) -> dict[str, Any]:
        """What the report needs, JSON-serialisable: root, source, image size, counts and skipped files."""
        if self.index is None:
            raise RuntimeError("FacesDataModule.summary() needs setup() first.")
        counts = self.index.counts()
        return {
            "root": str(self.index.root),
            "source": self.index.source,
            "image_size": self.image_size,
            "splits": {
                split: {
                    **{LABELS[label]: n for label, n in counts[split].items()},
                    "skipped": self.index.skipped_per_split.get(split, 0),
                }
                for split in SPLITS
            },
            "skipped_files": [list(item) for item in self.index.skipped],
        }

    @rank_zero_only
    def print_table(self) -> None:
        """Images and skipped files per split, on the console (unless show_table is off) and in the log.

        Splits with neither are left out: a set of class folders read as the test split would otherwise
        show train and val rows of zeros, which read like a broken data set (a split the run needs and
        lacks gets its own error). The root goes on a line of its own above the table, so that a long path
        is broken only where the terminal is narrower than it, not at the table's width."""
        splits = {
            split: row
            for split, row in self.summary()["splits"].items()
            if row["real"] + row["fake"] + row["skipped"]
        }
        if self.show_table:
            table = Table()
            for column in ("split", "real (0)", "fake (1)", "total", "skipped"):
                table.add_column(column, justify="left" if column == "split" else "right")
            for split, row in splits.items():
                total = row["real"] + row["fake"]
                table.add_row(split, str(row["real"]), str(row["fake"]), str(total), str(row["skipped"]))
            console = Console()
            heading, root = Text(f"Dataset (from {self.index.source}):"), Text(str(self.index.root))
            fits = heading.cell_len + 1 + root.cell_len <= console.width
            console.print(heading, root, sep=" " if fits else "\n")
            console.print(table)
        record.info(
            "Dataset %s (from %s), %d px: %s",
            self.index.root,
            self.index.source,
            self.image_size,
            "; ".join(
                f"{split} {r['real']} real, {r['fake']} fake, {r['skipped']} skipped"
                for split, r in splits.items()
            ),
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        if self.index is None:
            raise RuntimeError("FacesDataModule needs setup() before its loaders.")
        if self.num_workers and self._model_on_cpu():  # leave the workers their cores
            torch.set_num_threads(max(1, min(torch.get_num_threads(), available_cpus() - self.num_workers)))
        if train and self.augment and self.augment_on == "cpu":
            transform = train_transform(
                self.image_size, **self._augment_args(), blur_jpeg_prob=self.blur_jpeg_prob
            )
        elif train and self.blur_jpeg_prob:  # the rest on the device, after transfer
            transform = torch.nn.Sequential(*worker_steps(self.image_size, self.blur_jpeg_prob))
        else:
            transform = eval_transform(self.image_size)
        dataset = FaceImages(self.index.samples[split], transform)
        sampler = None
        if not train and self._processes() > 1:  # Lightning keeps a DistributedSampler as it is
            sampler = MarkedPaddingSampler(dataset, self._processes(), self.trainer.global_rank)
        ahead = {}  # PrefetchLoader's arguments
        if train and self.prefetch and self.trainer is not None:
            ahead = {"device": self.trainer.strategy.root_device, "augment": self.batch_augment}
        return (PrefetchLoader if ahead else DataLoader)(
            dataset,
            **ahead,
            batch_size=self.batch_size,
            shuffle=train,
            sampler=sampler,
            # Each process's share, not the whole split: under DDP a share smaller than a batch would
            # otherwise drop every batch and train nothing.
            drop_last=train and math.ceil(len(dataset) / self._processes()) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=partial(collate_faces, image_size=self.image_size),
        )

    def _processes(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def _augment_args(self) -> dict[str, Any]:
        """The flip, affine and contrast settings (``BatchAugment``'s), without ``blur_jpeg_prob``."""
        args = dict(self.augment) if isinstance(self.augment, Mapping) else {}
        args.pop("blur_jpeg_prob", None)
        return args

    @property
    def num_workers(self) -> int:
        if self._num_workers is not None:
            return self._num_workers
        if self.trainer is None:
            return default_num_workers()
        return default_num_workers(self.trainer.num_devices, self._model_on_cpu())

    def _model_on_cpu(self) -> bool:
        return self.trainer is not None and isinstance(self.trainer.accelerator, CPUAccelerator)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Augment training batches on the device when augment_on is "gpu" (the prefetching loader has)."""
        augments_here = self.batch_augment is not None and not self.prefetch
        if augments_here and self.trainer is not None and self.trainer.training:
            batch["image"] = self.batch_augment(batch["image"])
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
