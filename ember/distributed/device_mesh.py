"""``init_device_mesh``: ranks laid out on an n-dimensional grid, one process group per mesh axis.

The world's ranks fill the mesh in row-major order (``arange(world).reshape(shape)``), as
PyTorch. For a ``(2, 2)`` mesh named ``("dp", "tp")`` on 4 ranks, the tensor-parallel groups are
the rows ``[0, 1]`` and ``[2, 3]`` and the data-parallel groups the columns ``[0, 2]`` and
``[1, 3]``. Every rank creates every group (``new_group`` is collective) and keeps its own.

Example (``ember run -n 4``):
    >>> mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))  # doctest: +SKIP
    >>> tp_group = mesh.get_group("tp"); mesh["dp"].size()                    # doctest: +SKIP
    2
"""

from __future__ import annotations

import numpy as np

import ember.distributed as dist

__all__ = ["DeviceMesh", "init_device_mesh"]


class DeviceMesh:
    """A grid of global ranks with one process group per dimension (this rank's slice of each)."""

    def __init__(self, device_type: str, mesh: np.ndarray, mesh_dim_names: tuple | None, groups: list):
        self.device_type = device_type
        self._mesh = mesh
        self.mesh_dim_names = tuple(mesh_dim_names) if mesh_dim_names is not None else None
        self._groups = groups

    @property
    def mesh(self):
        import ember

        return ember.tensor(self._mesh)

    @property
    def ndim(self) -> int:
        return self._mesh.ndim

    @property
    def shape(self) -> tuple:
        return tuple(self._mesh.shape)

    def _dim(self, mesh_dim) -> int:
        if mesh_dim is None:
            if self.ndim != 1:
                raise RuntimeError("Found the DeviceMesh have more than one dimension: name the mesh_dim")
            return 0
        if isinstance(mesh_dim, str):
            if not self.mesh_dim_names or mesh_dim not in self.mesh_dim_names:
                raise KeyError(
                    f"Mesh dimension '{mesh_dim}' does not exist. Available mesh dimensions are: {self.mesh_dim_names}"
                )
            return self.mesh_dim_names.index(mesh_dim)
        return int(mesh_dim)

    def get_group(self, mesh_dim=None):
        """This rank's process group along ``mesh_dim`` (a name or an index)."""
        return self._groups[self._dim(mesh_dim)]

    def size(self, mesh_dim=None) -> int:
        return int(self._mesh.size) if mesh_dim is None else int(self._mesh.shape[self._dim(mesh_dim)])

    def get_rank(self) -> int:
        return dist.get_rank()

    def get_local_rank(self, mesh_dim=None) -> int:
        """This rank's coordinate along ``mesh_dim``."""
        d = self._dim(mesh_dim)
        coord = np.argwhere(self._mesh == dist.get_rank())[0]
        return int(coord[d])

    def __getitem__(self, name: str) -> DeviceMesh:
        """The 1-D sub-mesh along ``name`` that contains this rank."""
        d = self._dim(name)
        coord = np.argwhere(self._mesh == dist.get_rank())[0]
        index = tuple(slice(None) if i == d else int(c) for i, c in enumerate(coord))
        return DeviceMesh(self.device_type, self._mesh[index], (name,), [self._groups[d]])

    def __repr__(self) -> str:
        return f"DeviceMesh('{self.device_type}', {self._mesh.tolist()}, mesh_dim_names={self.mesh_dim_names})"


def init_device_mesh(device_type: str, mesh_shape: tuple, *, mesh_dim_names: tuple | None = None) -> DeviceMesh:
    """Lay the world's ranks out on ``mesh_shape`` and build a process group per dimension.

    Initializes the default process group (backend ``"gloo"`` on CPU) if needed.
    """
    if not dist.is_initialized():
        dist.init_process_group("gloo" if device_type == "cpu" else "nccl")
    world = dist.get_world_size()
    shape = tuple(int(s) for s in mesh_shape)
    if int(np.prod(shape)) != world:
        raise RuntimeError(
            f"init_device_mesh: mesh shape {shape} needs {int(np.prod(shape))} ranks, the world has {world}"
        )
    if mesh_dim_names is not None and len(mesh_dim_names) != len(shape):
        raise RuntimeError(f"mesh_dim_names {mesh_dim_names} must name each of the {len(shape)} mesh dimensions")
    mesh = np.arange(world).reshape(shape)
    me = dist.get_rank()
    groups = []
    for d in range(len(shape)):
        moved = np.moveaxis(mesh, d, -1).reshape(-1, shape[d])  # every 1-D line along dimension d
        mine = None
        for line in moved:
            g = dist.new_group(line.tolist())
            if me in line:
                mine = g
        groups.append(mine)
    return DeviceMesh(device_type, mesh, mesh_dim_names, groups)
