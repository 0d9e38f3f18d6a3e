"""Balancing methods, one per module; importing this package registers them all."""

from trainables.methods.base import METHODS, BalancingMethod, register_method
from trainables.registry import import_submodules

import_submodules(__name__)

__all__ = ["METHODS", "BalancingMethod", "register_method"]
