"""What to do, after Hydra's own error, for a mistyped key or a launcher whose plugin is not installed.

Hydra answers ``trainer.max_epoch=3`` with "Key 'max_epoch' is not in struct" and the advice to append it
with ``+``, which Lightning then refuses; this names the key that was meant. ``hydra/launcher=slurm``
without its plugin gives "Could not load 'hydra/launcher/submitit_slurm'"; this names the install command.
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Callable, Collection, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

from hydra import compose, initialize, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ffd.runtime import dotted_items, needs_extra

CONF = Path(__file__).resolve().parent / "conf"
# conf/hydra/launcher/<name>.yaml -> the plugin's module, its package and the extra that installs it
LAUNCHER_PLUGINS = {"slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm")}
# One setting, two commands' names for it: ffd.predict takes `model`, `input`, `threshold`; ffd.eval and
# ffd.export take `ckpt_path`, `data.root`, `callbacks.report.threshold`.
SAME_SETTING = (("model", "ckpt_path"), ("input", "data.root"), ("threshold", "callbacks.report.threshold"))
# What a shell's double quotes would read: escaped.
DOUBLE_QUOTED = str.maketrans({"\\": "\\\\", '"': '\\"', "$": "\\$", "`": "\\`"})
T = TypeVar("T")


def parents(key: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``."""
    parts = key.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def suggestions(config_name: str, arguments: Sequence[str], config_dir: Path | None = CONF) -> list[str]:
    """'did you mean' lines for the overrides in `arguments` that change a key the config lacks.

    `config_dir`: the entry point's config folder, None for one composed from Hydra's config store."""
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in arguments if not a.startswith("-")])
    except Exception:  # a syntax error: Hydra's own message says where; quotes may be the fix
        return quoting_hints(arguments)

    def is_group(key: str) -> bool:
        return config_dir is not None and (config_dir / key).is_dir()

    groups = [o.input_line for o in overrides if is_group(o.key_or_group) and not o.is_delete()]
    known = known_keys(config_name, groups, config_dir)
    # A group option that does not exist: Hydra has listed the ones that do; only another command's name
    # for a setting (ffd.eval model=...) is worth a line, looked up in the config as it is by default.
    names_only = known is None
    if known is None:
        known = known_keys(config_name, [], config_dir) or {}
    switched_off = {key for key, value in known.items() if value is None}
    lines = []
    for override in overrides:
        key = override.key_or_group
        if override.is_add() or override.is_delete() or key.startswith("hydra") or key in known:
            continue
        if off := next((parent for parent in parents(key) if parent in switched_off), None):
            lines.append(
                f"ffd: {off} is off (null) in the {config_name} config, so `{key}` has nothing to set: "
                f"give its whole entry, '+{off}={{_target_: <class>, ...}}' (conf/ names the class), or "
                "leave the option out."
            )
            continue
        meant = same_setting(key, known)
        if not (meant or names_only or is_group(key)):  # a group (experiment=...) is no key of the config
            meant = closest_key(key, known)
        if meant:
            value = override.input_line.split("=", 1)[1]
            lines.append(
                f"ffd: did you mean {meant}={value}? (`{key}` is not a key of the {config_name} config)"
            )
    return lines


HYDRA_SYNTAX = "~[](){},'\""  # characters of Hydra's override grammar that a path may hold (~ leading)


def quoting_hints(arguments: Sequence[str]) -> list[str]:
    """The argument quoted for Hydra, for each path that fails to parse as it is but parses quoted: one with
    brackets, parentheses, braces, commas (``input=photos/[ab]*.jpg``, ``My Photo (1).jpg``) or a leading
    ``~``, which the shell leaves alone after ``key=`` and ffd expands (``runtime.expand_home``)."""
    parser = OverridesParser.create()
    lines = []
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if argument.startswith("-") or not equals or not value or value[0] in "'\"":
            continue
        if not ("/" in value or " " in value or Path(value).suffix):  # not a path: trainer.max_epochs=[1
            continue
        quote = "'" if "'" not in value else '"'
        quoted = f"{key}={quote}{value}{quote}"
        try:
            parser.parse_overrides([argument])
        except Exception:
            try:
                parser.parse_overrides([quoted])
            except Exception:
                continue
            shell = f'"{quoted.translate(DOUBLE_QUOTED)}"'  # for the shell
            held = [c for c in HYDRA_SYNTAX if (value.startswith(c) if c == "~" else c in value)]
            what = f"{' '.join(held)} in a value" if held else "this value"
            lines.append(f"ffd: Hydra takes {what} only inside quotes: give the argument as {shell}")
    return lines


def known_keys(config_name: str, groups: Sequence[str], config_dir: Path | None) -> dict[str, Any] | None:
    """Every dotted key of the config composed with the `groups` choices, with its value; None if it does
    not compose."""
    try:
        with (
            initialize_config_dir(config_dir=str(config_dir), version_base="1.3")
            if config_dir
            else initialize(config_path=None, version_base="1.3")
        ):
            cfg = compose(config_name, overrides=list(groups))
    except Exception:
        return None
    return dict(dotted_items(OmegaConf.to_container(cfg, resolve=False)))


def same_setting(key: str, known: Collection[str]) -> str | None:
    """This config's name for a setting that another command calls `key` (ffd.predict's ``threshold`` is
    ffd.eval's ``callbacks.report.threshold``)."""
    for first, second in SAME_SETTING:
        for typed, meant in ((first, second), (second, first)):
            if key == typed and meant in known:
                return meant
    return None


def closest_key(key: str, known: Collection[str]) -> str | None:
    """The known key `key` most likely means: the one key with its last name elsewhere (``num_faces`` ->
    ``landmarks.num_faces``), else a sibling with a similar last name (``trainer.max_epoch`` ->
    ``trainer.max_epochs``, ``ckpt`` -> ``ckpt_path``), else a key as deep whose whole path is close
    (``trainr.max_epochs`` -> ``trainer.max_epochs``)."""
    parent, _, name = key.rpartition(".")
    same_name = [k for k in known if k.rpartition(".")[2] == name]
    if parent not in known and len(same_name) == 1:  # given without its parents: num_faces=2
        return same_name[0]
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    if close := difflib.get_close_matches(name, list(siblings), n=1, cutoff=0.6):
        return siblings[close[0]]
    as_deep = [k for k in known if k.count(".") == key.count(".")]
    return next(iter(difflib.get_close_matches(key, as_deep, n=1, cutoff=0.8)), None)


def launcher_hints(arguments: Sequence[str]) -> list[str]:
    """The install command for a ``hydra/launcher=NAME`` whose Hydra plugin is missing."""
    lines = []
    for argument in arguments:
        key, _, name = argument.partition("=")
        module, package, extra = LAUNCHER_PLUGINS.get(name, (None, None, None))
        if key.lstrip("+") == "hydra/launcher" and module and find_spec(module) is None:
            lines.append(f"ffd: error: hydra/launcher={name} {needs_extra(package, extra)}")
    return lines


def suggest_keys(
    config_name: str, config_dir: Path | None = CONF
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Wrap a ``hydra.main`` entry point: when it exits with 1, print the hints for its command line."""

    def decorate(entry: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(entry)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            try:
                return entry(*args, **kwargs)
            except SystemExit as stop:
                arguments = sys.argv[1:]
                if stop.code == 1 and (
                    lines := launcher_hints(arguments) + suggestions(config_name, arguments, config_dir)
                ):
                    print("", *lines, sep="\n", file=sys.stderr)
                raise

        return wrapper

    return decorate
