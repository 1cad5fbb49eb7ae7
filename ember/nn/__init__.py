"""``ember.nn``: modules, parameters, functional ops, initialization and utilities (``torch.nn``)."""
# ruff: noqa: F401 - this file re-exports the public API

from ember.nn import functional, init, parallel, utils
from ember.nn.modules import *  # noqa: F403 - the layer namespace is public API
from ember.nn.parameter import Buffer, Parameter
