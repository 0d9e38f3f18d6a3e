"""Datasets, one per module; importing this package registers them all."""

from trainables.data.base import DATASETS, DataBundle, DatasetSpec, ModalitySpec, register_dataset
from trainables.registry import import_submodules

import_submodules(__name__)

__all__ = ["DATASETS", "DataBundle", "DatasetSpec", "ModalitySpec", "register_dataset"]
