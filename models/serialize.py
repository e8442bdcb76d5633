"""river models as versioned bytes, restored by an unpickler that only knows model classes.

river's models have no portable format of their own, so a learner built from river pieces (a
pipeline, a forest) is pickled -- and restored by `loads`, which refuses any global outside
river, this package and the handful of standard types river's state is made of (Python's
"restricting globals" recipe). A snapshot written by another river version is refused too:
the caller starts a fresh model rather than trust a state whose classes may have changed.
"""

from __future__ import annotations

import io
import pickle
from importlib.metadata import version
from typing import Any

RIVER = version("river")

_ALLOWED_PREFIXES = ("river.", "models.")
_ALLOWED = {
    "builtins": {
        "float",
        "int",
        "bool",
        "str",
        "bytes",
        "list",
        "dict",
        "set",
        "frozenset",
        "tuple",
        "complex",
        "slice",
        "range",
    },
    "collections": {"OrderedDict", "Counter", "defaultdict", "deque"},
    "numbers": {"Number", "Real", "Integral"},
    "functools": {"partial"},
    "random": {"Random"},
    "copyreg": {"_reconstructor"},
    "math": {"inf"},
    "numpy": {"dtype", "ndarray"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_ALLOWED_PREFIXES) or name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a model snapshot")


def dumps(obj: Any) -> dict[str, Any]:
    """`{"river": version, "pickle": bytes}` for a model made of river pieces."""
    return {"river": RIVER, "pickle": pickle.dumps(obj, protocol=5)}


def loads(doc: dict[str, Any]) -> Any:
    """Inverse of `dumps`; ValueError for another river version or a refused global."""
    if doc.get("river") != RIVER:
        raise ValueError(f"snapshot made with river {doc.get('river')}, this is river {RIVER}")
    try:
        return _Unpickler(io.BytesIO(doc["pickle"])).load()
    except (pickle.UnpicklingError, AttributeError, EOFError, TypeError) as exc:
        raise ValueError(f"not a model snapshot: {exc}") from exc
