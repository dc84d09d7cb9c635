"""The fast star writer (``cryoclass.io.star.star_text``) against starfile itself: the same text,
byte for byte (but the line with starfile's time stamp), for every kind of column we write and
for the columns it hands back to starfile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoclass.io.star import _format_cells, star_text


def _starfile_text(blocks: dict[str, pd.DataFrame], tmp_path, float_format: str) -> str:
    path = tmp_path / "ref.star"
    starfile.write(blocks, path, float_format=float_format)
    return path.read_text(encoding="utf-8")


def _body(text: str) -> list[str]:
    lines = text.split("\n")
    assert lines[0].startswith("# Created by the starfile Python package")
    return lines[1:]  # the first line carries the time of writing


def _varied_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f64 = rng.normal(0, 1e4, n)
    f64[::7] = np.nan
    f64[1] = np.inf
    f64[2] = -0.0
    f64[3] = 1e-300
    f64[4] = 123456789012345.0
    names = np.array([f"{i + 1:06d}@Extract/job007/mic {i % 3}.mrcs" for i in range(n)], object)
    names[5] = ""
    return pd.DataFrame(
        {
            "rlnImageName": names,
            "rlnMicrographName": [f"mic_{i % 4}.mrc" for i in range(n)],
            "rlnAngleRot": f64,
            "rlnClassPosterior01": rng.random(n).astype(np.float32),
            "rlnDefocusU": rng.uniform(5000, 30000, n),
            "rlnClassNumber": rng.integers(1, 5, n),
            "rlnOpticsGroup": np.ones(n, np.int32),
            "cryoclassUid": rng.integers(0, 2**63 - 1, n, dtype=np.uint64),
            "flag": rng.random(n) > 0.5,
        }
    )


@pytest.mark.parametrize("float_format", ["%.12g", "%.6f"])
def test_star_text_equals_starfile(tmp_path, float_format):
    optics = pd.DataFrame(
        {"rlnOpticsGroup": [1, 2], "rlnOpticsGroupName": ["opticsGroup1", "a b"],
         "rlnVoltage": [300.0, 200.0], "rlnImagePixelSize": [1.0635, 0.83]}
    )  # fmt: skip
    blocks = {"optics": optics, "particles": _varied_table(257, 0)}
    assert all(_format_cells(blocks["particles"][c], float_format) for c in blocks["particles"])
    ours = star_text(blocks, float_format=float_format)
    assert _body(ours) == _body(_starfile_text(blocks, tmp_path, float_format))


def test_star_text_reads_back(tmp_path):
    table = _varied_table(50, 1)
    path = tmp_path / "x.star"
    path.write_text(star_text({"particles": table}), encoding="utf-8")
    back = starfile.read(path)
    assert list(back.columns) == list(table.columns)
    np.testing.assert_array_equal(back["rlnClassNumber"], table["rlnClassNumber"])
    np.testing.assert_allclose(back["rlnDefocusU"], table["rlnDefocusU"], rtol=1e-11)


def test_columns_it_cannot_format_go_through_starfile(tmp_path):
    """Extension dtypes (nullable integers with <NA>), mixed objects and tabs inside strings:
    the block is written by starfile itself, so the text is still starfile's."""
    for col in (
        pd.array([1, None, 3], dtype="Int64"),
        np.array([1, "two", 3.0], dtype=object),
        pd.array(["a", None, "c"], dtype="str"),
    ):
        blocks = {"particles": pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": col})}
        assert _format_cells(blocks["particles"]["b"], "%.12g") is None
        ours = star_text(blocks)
        assert _body(ours) == _body(_starfile_text(blocks, tmp_path, "%.12g"))
    assert _format_cells(pd.Series(["a\tb", "c"]), "%.12g") is None


def test_empty_loop_equals_starfile(tmp_path):
    blocks = {"particles": _varied_table(10, 2).iloc[:0]}
    assert _body(star_text(blocks)) == _body(_starfile_text(blocks, tmp_path, "%.12g"))
