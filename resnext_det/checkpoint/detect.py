"""Which source format a loaded weights object is, decided by its keys."""
from .errors import ConversionError
from .sources import SOURCES
from .sources.torch7 import flatten

# Dict keys under which checkpoints nest their state dict: Caffe2 ("blobs"), detectron2
# and ours ("model"), pycls ("model_state"), many training scripts ("state_dict").
_NESTED = ("model_state", "blobs", "model", "state_dict")


def unwrap(obj, container):
    """{key: array} of a loaded object, and the wrapper dict it came in (or {})."""
    if container == "torch7":
        return flatten(obj), {}
    if not isinstance(obj, dict):
        raise ConversionError(f"expected a dict of tensors, found {type(obj).__name__}")
    for key in _NESTED:
        if isinstance(obj.get(key), dict):
            return obj[key], obj
    return obj, {}


def detect_source(state, wrapper):
    """The Source whose naming the keys of `state` use."""
    for source in SOURCES:
        if source.matches(state, wrapper):
            return source
    sample = ", ".join(sorted(map(str, state))[:6])
    raise ConversionError(
        f"unknown weights format: none of {[s.name for s in SOURCES]} matches the keys "
        f"(first keys: {sample})")
