"""Data sets: the paper's benchmarks, built-in toys and users' files, preprocessed as in the paper.

* ``sources``: the names, the publishers' files (URLs, checksums), the data folder, download;
* ``readers``: the LIBSVM, IDX and CSV parsers, compressed input, format guessing;
* ``builtin``: the toys and scikit-learn's bundled sets, no files needed;
* ``prepare``: :class:`Dataset`, the paper's preprocessing (``prepare._prepare``),
  :func:`load_dataset`, :func:`load_file`, :func:`validate_for_k`.

Importing this package does not import torch. See ``ARML_NOTES.md`` sections 1 and 9.
"""
from .prepare import Dataset, load_dataset, load_file, validate_for_k
from .sources import (_LIBSVM_FILES, _REMOTE, BUILTIN_DATASETS, FILE_DATASETS, IMAGE_SHAPES,  # noqa: F401
                      available_datasets, dataset_status, download, list_datasets, resolve_data_dir)

__all__ = [
    "BUILTIN_DATASETS",
    "FILE_DATASETS",
    "IMAGE_SHAPES",
    "Dataset",
    "available_datasets",
    "dataset_status",
    "download",
    "list_datasets",
    "load_dataset",
    "load_file",
    "resolve_data_dir",
    "validate_for_k",
]
