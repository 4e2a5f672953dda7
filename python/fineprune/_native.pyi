# Type stubs of the extension module (crates/python/src/lib.rs).
from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

__version__: str

class Pair:
    @property
    def classes(self) -> int: ...
    @property
    def input_scale(self) -> float: ...
    def classify(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]: ...
    def probabilities(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...

def defend(
    config: str,
    code: str,
    progress: Optional[Callable[[str, int, int], Any]] = None,
    on_stage: Optional[Callable[[str], Any]] = None,
) -> str: ...
def load(b_path: str, b_prime_path: str, input_scale: float) -> Pair: ...
