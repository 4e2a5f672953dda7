"""fineprune from Python: the repaired ensemble G(B, B') of fine-pruning on NumPy arrays.

G answers B's class where the backdoored network B and its pruned (or fine-pruned) B' agree,
and N, the number of classes, meaning "backdoor", where they do not::

    import fineprune
    G = fineprune.load("work/ingest/model.safetensors",
                       "work/finetune/bd_net_fineprune_4_percent_threshold.safetensors")
    classes = G(x)  # x: (N, 3, 55, 47) CSAW layout or (N, 55, 47, 3) NHWC, pixels 0..255

Images are raw pixels as the CSAW HDF5 files hold them; the networks multiply them by their
input scale themselves (1 for bd_net.h5, 1/255 for the CSAW-2020 networks). The work runs on
every core with the GIL released.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import numpy.typing as npt

from . import _native

__version__: str = _native.__version__
__all__ = ["Repaired", "load", "__version__"]

PathLike = Union[str, "os.PathLike[str]"]


class Repaired:
    """G(B, B'): call it on images for their classes, `predict_proba` for probabilities."""

    def __init__(self, pair: _native.Pair) -> None:
        self._pair = pair

    @property
    def classes(self) -> int:
        """B's number of classes; G's extra label N ("backdoor") is this number."""
        return self._pair.classes

    @property
    def backdoor(self) -> int:
        """The label G answers where B and B' disagree (N, the number of classes)."""
        return self._pair.classes

    @property
    def input_scale(self) -> float:
        """What the networks multiply pixels by before their first layer."""
        return self._pair.input_scale

    def __call__(self, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """G's class per image (int64, shape (N,)): B's where B and B' agree, else `backdoor`.

        `x`: (N, 3, 55, 47) in the CSAW layout or (N, 55, 47, 3) NHWC, raw pixels (0..255);
        any other shape raises ValueError. Any real dtype, converted to float32.
        """
        return self._pair.classify(_images(x))

    def predict_proba(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """(N, classes + 1) float32 probabilities whose argmax is G's class: B's softmax (and
        0 for "backdoor") where B and B' agree, 1 on "backdoor" where they do not."""
        return self._pair.probabilities(_images(x))

    def __repr__(self) -> str:
        return f"Repaired(classes={self.classes}, input_scale={self.input_scale})"


def _images(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"images must be real numbers, not {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def load(b_path: PathLike, b_prime_path: PathLike, input_scale: float = 1.0) -> Repaired:
    """The repaired ensemble G from B's file and B''s (`.safetensors` as the pipeline writes
    them, or Keras `.h5`, read at `input_scale`).

    Raises FileNotFoundError naming a missing file, ValueError naming a file that is not a
    DeepID network or a B' that does not derive from B.
    """
    return Repaired(_native.load(os.fspath(b_path), os.fspath(b_prime_path), float(input_scale)))
