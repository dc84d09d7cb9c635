"""``cryoclass classify --set NAME=VALUE``: any parameter by its API name, typed by its field,
with one clear line for a bad name or value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cryoclass.cli import build_parser, params_from_args, parse_setting
from cryoclass.errors import InputFileError, ParameterError
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


# --------------------------------------------------------------------------- --params FILE
def _write(path, text):
    path.write_text(text)
    return str(path)


def test_params_file_from_a_previous_run(tmp_path):
    """A classification's params.yaml (the ``params`` section) replaces the defaults; options
    given with other values and --set win; -K and --filter-res may come from the file."""
    f = _write(
        tmp_path / "params.yaml",
        "cryoclass_version: 0.1.0\ncommand: cryoclass classify p.star -K 4 --filter-res 6\n"
        "params:\n  n_classes: 4\n  filter_res_A: 6.0\n  max_fem_iters: 9\n  scale_max: 3.0\n"
        "  oem_epochs: 3\n  use_fsc_filter: false\n",
    )
    parse = build_parser().parse_args
    p = params_from_args(parse(["classify", "p.star", "-o", "o", "--params", f]))
    assert (p.n_classes, p.filter_res_A, p.max_fem_iters, p.scale_max) == (4, 6.0, 9, 3.0)
    assert p.oem_epochs == 3 and p.use_fsc_filter is False
    p = params_from_args(
        parse(
            ["classify", "p.star", "-o", "o", "--params", f, "-K", "2", "--max-fem-iters", "5"]
            + ["--set", "scale_max=2"]
        )
    )
    # -K 2 given (even though 2 is the API default), --max-fem-iters changed, --set last
    assert (p.n_classes, p.max_fem_iters, p.scale_max, p.filter_res_A) == (2, 5, 2.0, 6.0)


def test_params_file_plain_mapping_and_bad_files(tmp_path):
    f = _write(tmp_path / "p.yaml", "pca_n_components: 3\nfilter_res_A: 7\n")
    p = _params("--params", f)
    assert p.pca_n_components == 3 and p.filter_res_A == 8.0  # --filter-res 8 given in BASE
    for text, words in [
        ("- 1\n- 2\n", "mapping"),
        ("a: [1\n", "not valid YAML"),
    ]:
        bad = _write(tmp_path / "bad.yaml", text)
        with pytest.raises(InputFileError, match=words) as e:
            _params("--params", bad)
        assert "bad.yaml" in str(e.value)
    with pytest.raises(InputFileError, match="cannot read"):
        _params("--params", str(tmp_path / "missing.yaml"))
    with pytest.raises(ParameterError, match="unknown parameter in") as e:
        _params("--params", _write(tmp_path / "u.yaml", "n_clases: 3\n"))
    assert e.value.name == "n_clases"


def test_k_and_filter_res_required_without_a_params_file(tmp_path):
    with pytest.raises(ParameterError, match="-K is required"):
        params_from_args(build_parser().parse_args(["classify", "p.star", "-o", "o"]))
    r = subprocess.run(
        [sys.executable, "-m", "cryoclass.cli", "classify", "p.star", "-K", "3", "-o", "o"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--filter-res is required" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _classify_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["classify"]


def test_every_option_is_described_and_a_value_option_shows_its_default():
    from cryoclass.cli import _FLAG_PARAMS, _params_from_flags
    from cryoclass.params import ClassificationParams

    c = _classify_parser()
    options = [a for a in c._actions if a.option_strings and a.dest != "help"]
    assert all(a.help for a in options), [a.dest for a in options if not a.help]
    help_text = c.format_help()
    for a in options:
        if a.dest in _FLAG_PARAMS and a.nargs != 0 and a.default not in (None, ""):
            assert "default" in a.help, a.dest
    assert "(default: 2.0)" in help_text  # --convergence-pct, from the API default
    assert "% of particles switch class" in help_text  # its text, from the parameter's help
    # the mapping names real options and parameters; a switch turns its parameter away from
    # the default (--no-… off, the others on), so unset flags give the API defaults
    by_dest = {a.dest: a for a in options}
    fields = ClassificationParams.__dataclass_fields__
    assert set(_FLAG_PARAMS) <= set(by_dest) and set(_FLAG_PARAMS.values()) <= set(fields)
    for dest, name in _FLAG_PARAMS.items():
        if by_dest[dest].nargs == 0:
            assert fields[name].default is dest.startswith("no_"), dest
    defaults = _params_from_flags(c.parse_args(BASE[1:]))
    assert defaults == {n: fields[n].default for n in _FLAG_PARAMS.values()} | {
        "n_classes": 3, "filter_res_A": 8.0
    }  # fmt: skip
