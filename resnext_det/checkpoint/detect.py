"""Which source format a loaded weights object is, decided by its keys."""
from .errors import ConversionError
from .sources import SOURCES
from .sources.pycls import best_state_key
from .sources.torch7 import flatten

# Dict keys under which checkpoints nest their state dict: Caffe2 ("blobs"), detectron2
# and ours ("model"), pycls ("model_state"), many training scripts ("state_dict").
_NESTED = ("model_state", "blobs", "model", "state_dict")


def unwrap(obj, container, path="the weights file"):
    """{key: array} of a loaded object, and the wrapper dict it came in (or {})."""
    if container == "torch7":
        if not hasattr(obj, "torch_typename"):  # torchfile reads tables and tensors as such
            raise ConversionError(f"{path}: a Torch7 file holding a {type(obj).__name__}, not a "
                                  "model (nn.Sequential ...). Give the model's .t7 file.")
        return flatten(obj), {}
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a dict of tensors, found a "
                              f"{type(obj).__name__}. Save weights with "
                              "torch.save(model.state_dict(), path).")
    for key in _NESTED:
        if isinstance(obj.get(key), dict):
            key = best_state_key(obj) if key == "model_state" else key  # pycls: as it loads
            obj, wrapper = obj[key], obj
            break
    else:
        wrapper = {}
    _check_arrays(obj, path)
    return obj, wrapper


def _check_arrays(state, path):
    """Every key of a state dict is a string, every value an array (tensor, ndarray, number)."""
    keys = [k for k in state if not isinstance(k, str)]
    if keys:
        raise ConversionError(f"{path}: {len(keys)} of its {len(state)} keys are not names "
                              f"({', '.join(repr(k) for k in keys[:5])}): not a state dict of weights.")
    bad = [(k, type(v).__name__) for k, v in state.items()
           if not (hasattr(v, "shape") or isinstance(v, (int, float)))]
    if bad:
        shown = ", ".join(f"{k!r} ({t})" for k, t in bad[:5])
        raise ConversionError(f"{path}: {len(bad)} of its {len(state)} entries are not arrays "
                              f"({shown}): not a state dict of weights.")


def _shape(value):
    return tuple(getattr(value, "shape", ()))


def detect_source(state, wrapper, path="the weights file"):
    """The Source whose naming the keys of `state` use; a ConversionError names the misfit."""
    if not state:
        raise ConversionError(f"{path}: holds no weights (an empty state dict, or a Torch7 tree "
                              "without a module of a known class: convolution, batch norm, "
                              "linear). Convert the file the training saved its weights in.")
    for source in SOURCES:
        if source.matches(state, wrapper):
            return source
    sample = "\n  ".join(f"{k} {_shape(state[k])}" for k in sorted(map(str, state))[:8]
                         if k in state)
    layouts = "\n  ".join(f"{s.name}: {s.layout}" for s in SOURCES)
    raise ConversionError(
        f"{path}: not a ResNet/ResNeXt layout this converter knows. First keys "
        f"(shape):\n  {sample}\nKnown layouts:\n  {layouts}")
