"""Running a network on aligned crops: the one forward loop and the one precision rule.

Validation during fine-tuning, the evaluate stage, the probes, the export stage's parity check,
``faceattr predict`` and MLflow serving all run networks through this package:

* :func:`forward_batches` and :func:`decoded_batches` (validation, evaluate, probes): the crops in
  order, batch by batch, in eval mode without autograd, the network under bf16 autocast where
  ``half`` (``finetune_multitask.accel.precision`` as training resolved it on this machine), the
  heads decoded in fp32 whatever the network ran in;
* :class:`Model` (predict, serving, export): a checkpoint or ONNX file with its meta, run in fp32 on
  the CPU, the precision its ONNX export is checked against.
"""

from faceattr.inference.batches import autocast, decoded_batches, forward_batches
from faceattr.inference.model import ONNX_META_KEY, Model, ModelError, load_model

__all__ = ["ONNX_META_KEY", "Model", "ModelError", "autocast", "decoded_batches", "forward_batches", "load_model"]
