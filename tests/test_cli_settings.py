"""``cryoclass classify --set NAME=VALUE``: any parameter by its API name, typed by its field,
with one clear line for a bad name or value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cryoclass.cli import build_parser, params_from_args, parse_setting
from cryoclass.errors import ParameterError
from cryoclass.params import PARAM_GROUPS, param_info

BASE = ["classify", "p.star", "-K", "3", "--filter-res", "8", "-o", "out"]


def _params(*extra: str):
    return params_from_args(build_parser().parse_args([*BASE, *extra]))


def test_values_are_typed_by_the_field():
    assert parse_setting("pca_n_components=3") == ("pca_n_components", 3)
    assert parse_setting("oem_epochs=4.0") == ("oem_epochs", 4)  # a whole number written as float
    assert parse_setting("scale_max = 3") == ("scale_max", 3.0)
    assert parse_setting("rms_change_check=off") == ("rms_change_check", False)
    assert parse_setting("force_hard=Yes") == ("force_hard", True)
    assert parse_setting("symmetry=D7") == ("symmetry", "D7")
    assert parse_setting("cache_dir=") == ("cache_dir", "")


@pytest.mark.parametrize(
    "text, name, words",
    [
        ("nope=1", "nope", "unknown parameter"),
        ("pca_n_components", "pca_n_components", "NAME=VALUE"),
        ("oem_epochs=2.5", "oem_epochs", "whole number"),
        ("scale_max=big", "scale_max", "a number"),
        ("force_hard=maybe", "force_hard", "true or false"),
    ],
)
def test_bad_settings_name_the_parameter(text, name, words):
    with pytest.raises(ParameterError) as e:
        parse_setting(text)
    assert e.value.name == name and words in str(e.value)


def test_set_reaches_every_parameter_and_wins_over_the_flags():
    p = _params(
        "--max-fem-iters", "5",
        "--set", "max_fem_iters=7",
        "--set", "scale_max=3",
        "--set", "mask_dilate_A=6",
        "--set", "rms_change_check=false",
        "--set", "scale_max=2.5",  # the last one of a name wins
    )  # fmt: skip
    assert p.max_fem_iters == 7 and p.scale_max == 2.5 and p.mask_dilate_A == 6.0
    assert p.rms_change_check is False
    assert _params().max_fem_iters == 20  # without --set: the flags and the API defaults
    # every parameter can be set, and the help lists every name
    names = {i["name"] for i in param_info()}
    assert names == {n for g in PARAM_GROUPS.values() for n in g}
    helptext = build_parser()._subparsers._group_actions[0].choices["classify"].format_help()
    assert all(f"{n}=" in helptext.replace("\n    ", " ") for n in names)


def test_limits_are_still_checked():
    with pytest.raises(ParameterError, match="pca_n_components"):
        _params("--set", "pca_n_components=0")


def test_cli_bad_setting_is_one_clear_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "cryoclass.cli", *BASE[:-1], str(tmp_path / "o"), "--set", "nope=1"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
