# detectron2's training settings (its configs/common/train.py, loaded from the installed
# model zoo) and the MODEL.RESNEXT keys that the lazy path reads.
from detectron2.model_zoo import get_config

train = get_config("common/train.py").train
# Evaluation runs on a copy of the model (MODEL.RESNEXT.FAST_INFERENCE): "" -> as trained;
# "fold" -> frozen norms folded into the convolutions; "fold+nhwc" -> and channels_last.
train.fast_inference = "fold+nhwc"
# Training computes the same function and gradients, faster (MODEL.RESNEXT.FAST_TRAINING):
# "" -> as detectron2; "fold" -> each FrozenBN computed inside its convolution;
# "fold+nhwc" -> and channels_last; "auto" -> fold+nhwc on AVX-512 CPUs, fold elsewhere.
# Parameter names and checkpoints are detectron2's.
train.fast_training = "auto"
# The number type of evaluation (MODEL.RESNEXT.INFERENCE_DTYPE): "float32"; "bfloat16" ->
# under torch.autocast, outputs in float32; "float16" -> likewise, CUDA only.
train.inference_dtype = "float32"
# The ROI heads' ROIAlign in training (MODEL.RESNEXT.ROI_ALIGN): "torchvision" -> detectron2's
# ROIPooler; "sparse" -> on the CPU, all FPN levels as one sparse matrix product (same
# values and gradients up to float rounding; resnext_det.modeling.roi_align).
train.roi_align = "torchvision"
# Loading train.init_checkpoint (any supported format, converted on load):
# allow_partial (MODEL.RESNEXT.WEIGHTS_ALLOW_PARTIAL): False -> ResNeXt keys that do not fit
# are an error naming them; True -> skipped and logged. trust_pickle
# (MODEL.RESNEXT.WEIGHTS_TRUST_PICKLE): True unpickles weights in full (runs their code).
train.weights = dict(allow_partial=False, trust_pickle=False)
