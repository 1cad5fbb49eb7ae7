"""``ember.distributed.nn``: differentiable collectives (``functional``) and tensor-parallel layers."""

from ember.distributed.nn import functional

__all__ = ["functional"]
