"""What the entry points share (ffd.runtime): list options as users type them."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ffd.runtime import UserError, list_option

CHOICES = ("fp32", "fp16", "int8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(["fp32", "int8"], ["fp32", "int8"]), ("int8", ["int8"]), ("fp16, int8", ["fp16", "int8"])],
)
def test_a_list_option_takes_a_list_one_value_or_a_comma_separated_string(value, expected) -> None:
    cfg = OmegaConf.create({"export": {"precisions": value}})
    assert list_option(cfg, "export.precisions", CHOICES) == expected


@pytest.mark.parametrize(("value", "problem"), [("int4", "unknown int4"), ([], "empty"), (None, "empty")])
def test_a_bad_list_option_names_the_key_and_the_choices(value, problem) -> None:
    cfg = OmegaConf.create({"export": {"precisions": value}})
    with pytest.raises(UserError, match=f"export.precisions=.*{problem}.*Choose among fp32, fp16, int8"):
        list_option(cfg, "export.precisions", CHOICES)
