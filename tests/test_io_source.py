"""Image sources: lazy memory-mapped reads, chunks, subsets, in-memory particles."""

from __future__ import annotations

import pickle
import time

import mrcfile
import numpy as np
import pytest
from test_io_helpers import BOX, make_dataset

from cryoclass.errors import InputFileError
from cryoclass.io import (
    ArrayImageSource,
    MrcsImageSource,
    Particles,
    read_particles,
    write_particles_with_images,
)


def test_read_any_order_with_duplicates(tmp_path):
    ds = make_dataset(tmp_path)
    src = read_particles(ds.star31).images
    idx = np.array([11, 0, 5, 5, 11, 3])
    out = src.read(idx)
    assert out.dtype == np.float32 and out.shape == (6, BOX, BOX)
    np.testing.assert_array_equal(out, ds.images[idx])
    assert src.read([]).shape == (0, BOX, BOX)
    with pytest.raises(IndexError):
        src.read([12])


def test_chunks_cover_everything(tmp_path):
    ds = make_dataset(tmp_path)
    src = read_particles(ds.star31).images
    seen = [(i, imgs) for i, imgs in src.chunks(5)]
    assert [len(i) for i, _ in seen] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate([x for _, x in seen]), ds.images)
    np.testing.assert_array_equal(np.concatenate([i for i, _ in seen]), np.arange(12))


def test_lazy_read_of_a_big_stack(tmp_path):
    """Reading 3 images of a 400 MB stack touches only those pages."""
    n, box = 1600, 256
    path = tmp_path / "big.mrcs"
    with mrcfile.new_mmap(path, shape=(n, box, box), mrc_mode=2) as m:  # sparse file
        m.data[1234] = 7.0
    src = MrcsImageSource(np.full(n, str(path)), np.arange(n))
    t0 = time.perf_counter()
    out = src.read([1234, 3, 1599])
    elapsed = time.perf_counter() - t0
    assert out.shape == (3, box, box) and (out[0] == 7).all() and (out[1] == 0).all()
    assert elapsed < 0.5, f"reading 3 images took {elapsed:.2f} s"
    assert all(isinstance(mm, np.memmap) for mm in src._open.values())


def test_stack_file_names_in_errors(tmp_path):
    ds = make_dataset(tmp_path)
    with pytest.raises(InputFileError, match=r"mic0\.mrcs: particle 1 refers to image 9"):
        MrcsImageSource([str(ds.stacks[0])] * 2, [0, 8])


def test_pickle_does_not_carry_memmaps(tmp_path):
    ds = make_dataset(tmp_path)
    src = read_particles(ds.star31).images
    src.read([0, 7])
    clone = pickle.loads(pickle.dumps(src))
    assert len(pickle.dumps(src)) < 20000
    np.testing.assert_array_equal(clone.read([3]), ds.images[[3]])


def test_subset_of_subset(tmp_path):
    ds = make_dataset(tmp_path)
    p = read_particles(ds.star31)
    sub = p.subset(np.arange(12) % 3 == 0).subset([3, 0])  # particles 9 and 0
    np.testing.assert_array_equal(sub.images.read([0, 1]), ds.images[[9, 0]])
    np.testing.assert_array_equal(sub.meta["image_index"], p.meta["image_index"][[9, 0]])


def test_from_arrays_and_write_with_images(tmp_path):
    rng = np.random.default_rng(3)
    imgs = rng.normal(size=(7, 12, 12)).astype(np.float32)
    rot = np.tile(np.eye(3), (7, 1, 1))
    p = Particles.from_arrays(
        imgs, {"rotations": rot, "pixel_size_A": 2.5, "defocus_u_A": rng.uniform(1e4, 2e4, 7)}
    )
    assert isinstance(p.images, ArrayImageSource) and p.source_format == "memory"
    assert p.meta["half_set"].isin([0, 1]).all() and (p.meta["scale"] == 1).all()
    np.testing.assert_array_equal(p.meta["defocus_v_A"], p.meta["defocus_u_A"])
    out = write_particles_with_images(
        tmp_path / "sim" / "p.star",
        p,
        tmp_path / "sim" / "stacks" / "p.mrcs",
        cs_path=tmp_path / "sim" / "p.cs",
    )
    assert out.source_format == "star" and out.pixel_size_A == 2.5
    np.testing.assert_array_equal(out.images.read(np.arange(7)), imgs)
    np.testing.assert_allclose(out.rotations, rot, atol=1e-12)
    with mrcfile.open(tmp_path / "sim" / "stacks" / "p.mrcs") as m:
        assert m.voxel_size.x == pytest.approx(2.5) and m.is_image_stack()
    cs = read_particles(tmp_path / "sim" / "p.cs")
    np.testing.assert_array_equal(cs.images.read([6]), imgs[[6]])
    for c in ("defocus_u_A", "half_set", "uid", "image_index"):
        np.testing.assert_allclose(cs.meta[c], out.meta[c], rtol=1e-6, err_msg=c)


def test_from_arrays_requires_poses():
    with pytest.raises(ValueError, match="rotation_00"):
        Particles.from_arrays(np.zeros((2, 8, 8)), {"pixel_size_A": 1.0, "defocus_u_A": 1e4})


def test_pixel_size_disagreement(tmp_path):
    rot = np.tile(np.eye(3), (2, 1, 1))
    p = Particles.from_arrays(
        np.zeros((2, 8, 8)), {"rotations": rot, "pixel_size_A": [1.0, 1.2], "defocus_u_A": 1e4}
    )
    with pytest.raises(InputFileError, match="different pixel sizes"):
        _ = p.pixel_size_A
