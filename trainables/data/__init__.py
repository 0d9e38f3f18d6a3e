"""Datasets, one registered dataset per module; what they share lives in :mod:`trainables.data.io`.

Importing this package registers every dataset (the modules beside ``io``, never the ones inside it).
"""

from trainables.data.io.base import DATASETS, DataBundle, DatasetSpec, ModalitySpec, register_dataset
from trainables.registry import import_submodules

import_submodules(__name__)

__all__ = ["DATASETS", "DataBundle", "DatasetSpec", "ModalitySpec", "register_dataset"]
