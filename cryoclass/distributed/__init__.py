"""Scale-out with Dask: particles shard across workers, the driver reduces their statistics.

``Classification(particles, params, client=dask.distributed.Client(...))`` (or
``cryoclass classify ... --scheduler ADDRESS``) preprocesses each shard of particles on its worker,
runs every E-step/M-step pass there and sums the partial sufficient statistics on the driver in
shard order (deterministic; equal to one process up to float32 summation order). Workers may be
GPUs (``dask-cuda``) with ``device='gpu'``. See ``docs/distributed.md`` for clusters (SLURM via
``dask-jobqueue``).

Example
-------
>>> from cryoclass.distributed import shard_bounds
>>> shard_bounds(7, 2).tolist()
[0, 3, 7]
"""

from ._executor import DaskExecutor, ShardedStore, build_sharded_problem, shard_bounds

__all__ = ["DaskExecutor", "ShardedStore", "build_sharded_problem", "shard_bounds", "connect"]


def connect(address: str) -> object:
    """A ``dask.distributed.Client`` for a scheduler ``address`` (clear error without Dask)."""
    try:
        from dask.distributed import Client
    except ImportError:  # pragma: no cover - depends on the environment
        from ..errors import ParameterError

        raise ParameterError(
            "scheduler", "needs Dask: pip install 'cryoclass[dask]' (dask[distributed])"
        ) from None
    return Client(address)
