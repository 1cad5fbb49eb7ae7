"""Random numbers: one seeded default generator (``ember.manual_seed``) and ``ember.Generator``.

Ember draws from NumPy's PCG64, so seeded sequences are reproducible within Ember but differ from
PyTorch's (Mersenne Twister / Philox) streams.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = [
    "Generator",
    "default_generator",
    "manual_seed",
    "seed",
    "initial_seed",
    "get_rng_state",
    "set_rng_state",
    "numpy_generator",
]


class Generator:
    """A random number generator; pass it as ``generator=`` to random ops and samplers.

    Example:
        >>> import ember
        >>> g = ember.Generator().manual_seed(0)
        >>> ember.rand(2, generator=g).shape
        ember.Size([2])
    """

    def __init__(self, device="cpu"):
        self.device = device
        self._seed = 67280421310721  # PyTorch's default seed, for familiarity
        self.np = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> Generator:
        seed = int(seed)
        if seed < 0:
            seed += 1 << 64
        self._seed = seed
        self.np = np.random.Generator(np.random.PCG64(seed))
        return self

    def seed(self) -> int:
        s = int(np.random.SeedSequence().entropy % (1 << 63))
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self):
        """The generator state as a uint8 tensor (JSON bytes), as PyTorch returns a ByteTensor."""
        from ember.ops.creation import tensor

        raw = json.dumps({"seed": self._seed, "state": self.np.bit_generator.state}).encode()
        return tensor(list(raw), dtype="uint8")

    def set_state(self, state) -> Generator:
        data = json.loads(bytes(state.tolist()).decode())
        self._seed = data["seed"]
        bg = np.random.PCG64()
        bg.state = data["state"]
        self.np = np.random.Generator(bg)
        return self


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (and return it), so random ops repeat exactly.

    Example:
        >>> import ember
        >>> _ = ember.manual_seed(0); a = ember.rand(3)
        >>> _ = ember.manual_seed(0); b = ember.rand(3)
        >>> bool((a == b).all())
        True
    """
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(state) -> None:
    default_generator.set_state(state)


def numpy_generator(generator: Generator | None) -> np.random.Generator:
    return (generator or default_generator).np
