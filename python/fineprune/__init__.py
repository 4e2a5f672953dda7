"""fineprune from Python: the fine-pruning defense and its repaired ensemble G(B, B').

`defend` runs the whole defense on a backdoored network as `make all` does (the same stages,
files and caching) and returns its results; G answers B's class where the backdoored network
B and its pruned (or fine-pruned) B' agree, and N, the number of classes, meaning "backdoor",
where they do not::

    import fineprune
    result = fineprune.defend("models/bd_net.h5", "data/valid.h5", "data/test.h5",
                              "data/bd_test.h5", work_dir="work")
    G = result.repaired(4)          # with the network fine-pruned at the 4-point threshold
    classes = G(x)  # x: (N, 3, 55, 47) CSAW layout or (N, 55, 47, 3) NHWC, pixels 0..255

Images are raw pixels as the CSAW HDF5 files hold them; the networks multiply them by their
input scale themselves (1 for bd_net.h5, 1/255 for the CSAW-2020 networks). The work runs on
every core with the GIL released.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _native

__version__: str = _native.__version__
__all__ = ["Repaired", "Result", "defend", "load", "__version__"]

log = logging.getLogger("fineprune")

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


class Result:
    """What `defend` made: the evaluate summary, the networks, and G for any of them."""

    def __init__(self, work_dir: pathlib.Path, found: Dict[str, Any]) -> None:
        self.work_dir = work_dir
        #: The stages this call ran (none when every result was current).
        self.stages_run: List[str] = found["stages_run"]
        #: One dict per row of `work/evaluate/summary.parquet` (full precision): `network`,
        #: `threshold_percent`, `channels_pruned`, `valid_accuracy`, `clean_test_accuracy`,
        #: `attack_success_rate`, ...; `pandas.DataFrame(result.summary)` makes it a table.
        self.summary: List[Dict[str, Any]] = found["summary"]
        #: B as the pipeline stores it (`work/ingest/model.safetensors`).
        self.backdoored = pathlib.Path(found["backdoored"])
        #: Every derived network: `kind` (`pruned`, `fine_pruned`, `fine_tuned`),
        #: `threshold_percent` (None for `fine_tuned`) and `path` (its `.safetensors`; the
        #: `.h5`, `.onnx` and `repaired_*.onnx` lie beside it).
        self.networks: List[Dict[str, Any]] = [
            dict(n, path=pathlib.Path(n["path"])) for n in found["networks"]
        ]
        #: The report folder (`performance.csv`, `summary.csv`, the plots).
        self.reports = pathlib.Path(found["reports"])

    def network(self, threshold: Optional[float], fine_pruned: bool = True) -> pathlib.Path:
        """The `.safetensors` of the network pruned at `threshold` points, fine-tuned after
        pruning unless `fine_pruned` is False; threshold None: B fine-tuned without pruning."""
        kind = "fine_tuned" if threshold is None else ("fine_pruned" if fine_pruned else "pruned")
        for n in self.networks:
            if n["kind"] == kind and n["threshold_percent"] == threshold:
                return n["path"]
        made = sorted({(n["kind"], n["threshold_percent"]) for n in self.networks}, key=str)
        raise KeyError(f"no {kind} network at threshold {threshold}; this run made {made}")

    def repaired(self, threshold: Optional[float], fine_pruned: bool = True) -> Repaired:
        """G(B, B') with the network `network(threshold, fine_pruned)` names."""
        return load(self.backdoored, self.network(threshold, fine_pruned))

    def __repr__(self) -> str:
        return f"Result(work_dir={str(self.work_dir)!r}, stages_run={self.stages_run}, networks={len(self.networks)})"


Progress = Callable[[str, int, int], Any]


def defend(
    model: PathLike,
    valid: PathLike,
    test: Optional[PathLike] = None,
    poisoned_test: Optional[PathLike] = None,
    thresholds: Sequence[float] = (2, 4, 10),
    work_dir: PathLike = "work",
    reports_dir: Optional[PathLike] = None,
    input_scale: float = 1.0,
    progress: Optional[Progress] = None,
    **settings: Dict[str, Any],
) -> Result:
    """Runs the fine-pruning defense on the backdoored network `model` (Keras `.h5`, read at
    `input_scale`) with clean validation data `valid` and the test sets (CSAW HDF5), as
    `make all` does with a `pipeline.toml` saying the same: the same stages, the same files
    under `work_dir` (reports in `reports_dir`, by default `work_dir/reports`), and a stage
    skipped when its outputs are current, so a second call with the same arguments runs
    nothing.

    `thresholds`: accuracy drops (percentage points) at which B' is kept. `settings`: other
    `pipeline.toml` tables as dicts, e.g. ``finetune={"steps": 300}``, ``profile={"statistic":
    "rnp"}``; an unknown table or key raises ValueError. `progress(phase, done, total)` hears
    how each phase goes (at most once per percent); stage starts go to the "fineprune" logger.

    The stages score every network on `test` and `poisoned_test` (triggered images labelled
    with the attack target), so both are needed, as for `make all`. Raises FileNotFoundError
    naming a missing input, ValueError for anything else the pipeline refuses.
    """
    if test is None or poisoned_test is None:
        raise ValueError("defend needs test and poisoned_test: every network is scored on them, as in make all")
    inputs = {"model": model, "valid": valid, "test": test, "poisoned_test": poisoned_test}
    for name, path in inputs.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{os.fspath(path)}: no such file ({name})")
    work = pathlib.Path(work_dir).absolute()
    absolute = {k: str(pathlib.Path(v).absolute()) for k, v in inputs.items()}
    tables: Dict[str, Any] = {
        "data": {k: absolute[k] for k in ("valid", "test", "poisoned_test")},
        "model": {"weights": absolute["model"], "input_scale": float(input_scale)},
        "work": {
            "dir": str(work),
            "reports": str(pathlib.Path(reports_dir).absolute() if reports_dir else work / "reports"),
        },
        "prune": {"thresholds": [float(t) for t in thresholds]},
    }
    for table, values in settings.items():
        if not isinstance(values, dict):
            raise ValueError(f"setting {table}: a table of the pipeline's settings (a dict), not {values!r}")
        tables.setdefault(table, {}).update(values)
    found = _native.defend(
        json.dumps(tables),
        _native.__file__,
        progress,
        lambda stage: log.info("running %s", stage),
    )
    return Result(work, json.loads(found))
