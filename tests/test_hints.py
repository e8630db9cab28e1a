"""A did-you-mean after Hydra's error for a mistyped key."""

from __future__ import annotations

import subprocess

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from cli import run_main_in_process
from ffd import hints
from ffd.hints import closest_key, launcher_hints, suggestions


@pytest.mark.parametrize(
    ("config", "typed", "meant"),
    [
        ("train", ["trainer.max_epoch=3"], "trainer.max_epochs=3"),
        ("train", ["data.batchsize=8"], "data.batch_size=8"),
        ("train", ["trainr.max_epochs=2"], "trainer.max_epochs=2"),
        ("train", ["modle=vit"], "model=vit"),
        ("train", ["model=vit", "model.net.dpth=2"], "model.net.depth=2"),  # a key of the chosen model
        ("train", ["-m", "seed=1,2", "sed=3"], "seed=3"),
        ("eval", ["ckpt=last.ckpt"], "ckpt_path=last.ckpt"),
        ("segment", ["inptu=photos/"], "input=photos/"),
        ("segment", ["mesh=true"], "landmarks.mesh=true"),  # not the sibling `models`, a near spelling
        ("segment", ["num_faces=2"], "landmarks.num_faces=2"),  # a key given without its parents
        ("train", ["max_epochs=3"], "trainer.max_epochs=3"),
    ],
)
def test_a_mistyped_key_gets_the_key_it_resembles(config: str, typed: list[str], meant: str) -> None:
    (line,) = suggestions(config, typed)
    assert line.startswith(f"ffd: did you mean {meant}? (`{typed[-1].split('=')[0]}` is not a key")


def test_predict_is_composed_from_the_config_store() -> None:
    """predict's `model` is a file, not the training config group of that name."""
    result = run_main_in_process("ffd.predict", "input=x", "ckpt_path=y.ckpt", "thresold=0.3")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "ffd: did you mean model=y.ckpt? (`ckpt_path` is not a key of the predict config)" in result.stderr
    assert "ffd: did you mean threshold=0.3? (`thresold` is not a key of the predict config)" in result.stderr


@pytest.mark.parametrize(
    ("config", "typed", "meant"),
    [
        ("eval", "threshold=0.3", "callbacks.report.threshold=0.3"),
        ("eval", "input=/data/sg3", "data.root=/data/sg3"),
        ("eval", "model=last.ckpt", "ckpt_path=last.ckpt"),  # `model` is a group of conf/, not of eval
        ("export", "model=last.ckpt", "ckpt_path=last.ckpt"),
    ],
)
def test_another_commands_name_for_a_setting_gets_this_ones(config: str, typed: str, meant: str) -> None:
    """ffd.predict says model, input and threshold; ffd.eval and ffd.export say ckpt_path, data.root and
    callbacks.report.threshold: names that are no misspelling of each other."""
    (line,) = suggestions(config, [typed])
    assert line.startswith(f"ffd: did you mean {meant}?")


def test_a_group_choice_is_not_taken_for_another_commands_name() -> None:
    """ffd.train's `model` is its network config group: Hydra lists the options for model=last.ckpt."""
    assert suggestions("train", ["model=last.ckpt"]) == []


def test_eval_given_a_model_names_ckpt_path_after_hydras_error() -> None:
    result = run_main_in_process("ffd.eval", "model=last.ckpt")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "ffd: did you mean ckpt_path=last.ckpt?" in result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.max_epochs=3", "model=vit", "model.net.depth=2"],  # all valid
        [
            "experiment=quickstart",
            "~logger",
            "+trainer.detect_anomaly=true",
        ],  # a group, a deletion, an addition
        ["model=nosuchmodel"],  # Hydra lists the group's options itself
        ["trainer.foo=1", "hydra.run.dir=/tmp/x"],  # nothing close; Hydra's own keys
        ["trainer.max_epochs=[1"],  # a syntax error, which Hydra explains
    ],
)
def test_no_suggestion_without_a_close_key(overrides: list[str]) -> None:
    assert suggestions("train", overrides) == []


def test_a_key_matches_its_siblings_before_keys_elsewhere() -> None:
    known = ["data", "data.root", "data.batch_size", "trainer", "trainer.devices"]
    assert closest_key("data.devices", known) is None  # a real key, but of another parent
    assert closest_key("data.roots", known) == "data.root"


def test_the_command_line_shows_the_suggestion_after_hydras_error() -> None:
    result = run_main_in_process("ffd.train", "trainer.max_epoch=3")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.index("Key 'max_epoch' is not in struct") < result.stderr.index(
        "ffd: did you mean trainer.max_epochs=3?"
    )


@pytest.mark.parametrize("installed", [False, True])
def test_a_launcher_without_its_plugin_gets_the_install_command(monkeypatch, installed: bool) -> None:
    monkeypatch.setattr(hints, "find_spec", lambda name: object() if installed else None)
    lines = launcher_hints(["-m", "hydra/launcher=slurm", "trainer=gpu"])
    if installed:
        assert lines == []
    else:
        (line,) = lines
        assert line.startswith("ffd: error: hydra/launcher=slurm needs hydra-submitit-launcher, one of")
        assert 'pip install -e ".[slurm]"' in line


@pytest.mark.parametrize(
    ("value", "held"),
    [
        ("sp ace/My Photo (1).jpg", "( )"),
        ("photos/[ab]*.jpg", "[ ]"),
        ("it's {x}.png", "{ } '"),
        ("~/faces", "~"),
    ],
)
def test_a_value_hydra_cannot_parse_gets_the_quoted_argument(value: str, held: str) -> None:
    """Hydra's "mismatched input '('" does not say that quotes inside the argument are the way out; for a
    leading ~ the hint used to blame brackets or commas."""
    (line,) = suggestions("segment", [f"input={value}", "backend=regions"])
    assert line.startswith(f"ffd: Hydra takes {held} in a value only inside quotes: "), line
    shell = line.rpartition("give the argument as ")[2]
    quoted = subprocess.run(["bash", "-c", f"printf %s {shell}"], capture_output=True, text=True).stdout
    parsed = OverridesParser.create().parse_overrides([quoted])[0]
    assert (parsed.key_or_group, parsed.value()) == ("input", value)


def test_an_option_of_an_entry_that_is_off_says_it_is_off() -> None:
    """The quickstart sets callbacks.finetune: null: Hydra's advice for callbacks.finetune.warmup_epochs=1,
    adding it with +, would configure a callback that is never built."""
    (line,) = suggestions("train", ["experiment=quickstart", "callbacks.finetune.warmup_epochs=1"])
    assert line.startswith("ffd: callbacks.finetune is off (null) in the train config")
    assert "'+callbacks.finetune={_target_: <class>, ...}'" in line
    assert suggestions("train", ["callbacks.finetune.warmup_epochs=1"]) == []  # on with model=densenet
