"""The training loop: FCN on a segmentation dataset, one process or many (DDP), resumable exactly.

Exact resumption rests on three things: the data order and augmentation of micro-batch ``m`` are pure
functions of ``(seed, m)`` (epoch permutations from a seeded generator, per-sample augmentation seeded by
``(seed, epoch, index)``); the optimizer, gradient scaler and RNG states are in the checkpoint; and nothing
between a checkpoint and the next step draws from the global RNG (data loaders get their own generators).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from ..errors import ConfigError, DatasetError, FcnError, TrainingError
from ..io import atomic_write_json, atomic_write_png, atomic_write_text, ensure_output_dir
from ..processes import loader_worker_init, stop_loader_workers
from ..segmentation.checkpoint import load_checkpoint, load_segmentation_model, save_checkpoint
from ..segmentation.datasets import IGNORE_INDEX, FolderSegmentation, SegmentationDataset, VOCSegmentation
from ..segmentation.metrics import confusion_matrix, segmentation_scores
from ..segmentation.models import SegmentationFCN, build_segmentation_model
from ..segmentation.published import published_scores
from ..segmentation.transforms import Augmentation, SegmentationTorchDataset, collate_padded
from .config import TrainingConfig, config_to_dict
from .curve import draw_training_curve
from .ddp import DistributedContext, init_distributed, shutdown_distributed

__all__ = ["TrainResult", "evaluate", "evaluate_checkpoint", "learning_rate", "open_datasets", "open_eval_dataset", "train"]

logger = logging.getLogger(__name__)

#: The reference recipe trains biases at twice the learning rate and without weight decay.
BIAS_LR_FACTOR = 2.0


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    losses: list[float] = field(default_factory=list)  # loss of every iteration run in this call (all ranks' mean)
    history: dict = field(default_factory=dict)
    best_mean_iu: float = float("nan")
    last_scores: dict | None = None


def learning_rate(iteration: int, config: TrainingConfig) -> float:
    """Learning rate of ``iteration`` (0-based) under the configured schedule."""
    train = config.train
    if train.scheduler == "poly":
        return train.lr * (1.0 - iteration / train.iterations) ** train.poly_power
    if train.scheduler == "step":
        return train.lr * train.step_gamma ** (iteration // train.step_size)
    return train.lr


def open_datasets(config: TrainingConfig) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """The training and validation datasets a config names."""
    data = config.data
    if data.format == "voc":
        train_set = VOCSegmentation(data.root, data.train_split or "train", sbd_root=data.sbd_root,
                                    sbd_split=data.sbd_split, exclude_split=data.val_split)
        val_set = VOCSegmentation(data.val_root or data.root, data.val_split) if data.val_split else None
    else:
        train_set = FolderSegmentation(data.root, data.train_split, classes_file=data.classes_file)
        val_root = data.val_root or data.root
        val_set = (FolderSegmentation(val_root, data.val_split, classes_file=data.classes_file,
                                      class_names=train_set.class_names)
                   if data.val_split or data.val_root else None)
    if val_set is not None and val_set.class_names != train_set.class_names:
        raise DatasetError(f"validation classes {val_set.class_names} differ from training classes {train_set.class_names}")
    if val_set is not None and data.max_val_images:
        val_set.entries = val_set.entries[: data.max_val_images]
    return train_set, val_set


def open_eval_dataset(path: str | Path, split: str | None, class_names: list[str]) -> SegmentationDataset:
    """A dataset folder for evaluation: a VOC2012 folder (``JPEGImages/``) or the folder layout (``images/``)."""
    path = Path(path)
    if (path / "JPEGImages").is_dir():
        return VOCSegmentation(path, split or "val")
    if (path / "images").is_dir():
        return FolderSegmentation(path, split, class_names=class_names)
    raise DatasetError(f"{path}: neither a VOC2012 folder (JPEGImages/) nor a folder dataset (images/, masks/)")


def _micro_batches(dataset: SegmentationTorchDataset, config: TrainingConfig, context: DistributedContext, start: int):
    """Yield training micro-batches from number ``start`` on; batch ``m`` is the same in every run."""
    batch_size = config.train.batch_size
    total = len(dataset)
    per_rank = math.ceil(total / context.world_size)
    per_epoch = per_rank // batch_size
    if per_epoch < 1:
        raise DatasetError(
            f"the training set has {total} samples, fewer than batch_size {batch_size} × {context.world_size} "
            "processes; lower train.batch_size or add data"
        )
    epoch, position = divmod(start, per_epoch)
    while True:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(config.train.seed * 7919 + epoch)).tolist()
        order += order[: per_rank * context.world_size - total]  # pad so every rank gets as many (as DistributedSampler)
        shard = order[context.rank :: context.world_size]
        batches = [shard[i * batch_size : (i + 1) * batch_size] for i in range(position, per_epoch)]
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, collate_fn=collate_padded, num_workers=config.data.num_workers,
            generator=torch.Generator().manual_seed(config.train.seed + epoch),
            pin_memory=context.device.type == "cuda", worker_init_fn=loader_worker_init(),  # workers die with us
        )
        iterator = iter(loader)
        try:
            for batch in iterator:
                yield epoch, batch
        except FcnError as error:
            raise type(error)(_message_from_worker(error)) from None
        finally:
            stop_loader_workers(iterator)  # an epoch left early (an error, a stop): nobody reads their batches
        epoch, position = epoch + 1, 0


def _message_from_worker(error: FcnError) -> str:
    """The error's own message: torch re-raises an error of a loader worker with the worker's traceback in front
    of it, which must not reach the one-line error the user sees."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    return text.rsplit(f"{type(error).__module__}.{type(error).__qualname__}: ", 1)[-1].strip()


def _loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """Cross-entropy over non-ignored pixels: their mean (0 if there are none — never NaN) or their sum."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if reduction == "sum":
        return total
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, dataset: SegmentationDataset, context: DistributedContext, *, batch_size: int = 1,
    amp: bool = False, progress=None,
) -> dict:
    """Scores of ``model`` on ``dataset``: each rank scores its share, confusion matrices are summed."""
    was_training = model.training
    model.eval()
    network = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    mean, std = network.mean, network.std
    torch_set = SegmentationTorchDataset(dataset, mean, std)
    indices = list(range(context.rank, len(dataset), context.world_size))
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    loader = torch.utils.data.DataLoader(torch_set, batch_sampler=batches, collate_fn=collate_padded,
                                         generator=torch.Generator().manual_seed(0))
    hist = torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.int64, device=context.device)
    task = progress.add_task("validating", total=len(batches), status="") if progress is not None else None
    for images, labels in loader:
        images, labels = images.to(context.device), labels.to(context.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp and context.device.type == "cuda"):
            logits = model(images)
        hist += confusion_matrix(logits.argmax(dim=1), labels, dataset.num_classes)
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    hist = context.all_reduce_sum(hist)
    model.train(was_training)
    return segmentation_scores(hist, dataset.class_names)


def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), transient=False)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _initialise_from(model: SegmentationFCN, path: str, payload: dict) -> None:
    """Copy every weight of an earlier stage's checkpoint (``payload``, read from ``path``) whose name and shape
    match (FCN-32s → 16s → 8s; an imported reference model): score layers for other classes stay new."""
    source = payload.get("model")
    if not isinstance(source, dict):
        raise ConfigError(f"model.init_from {path}: the checkpoint holds no model weights (damaged?)")
    own = model.state_dict()
    matching = {key: value for key, value in source.items() if key in own and own[key].shape == value.shape}
    if not matching:
        raise ConfigError(f"model.init_from {path}: no weights match this model")
    model.load_state_dict(matching, strict=False)
    logger.info("initialised %d tensors from %s", len(matching), path)


def _save_run_files(run_dir: Path, history: dict) -> None:
    atomic_write_json(run_dir / "history.json", history)
    atomic_write_png(run_dir / "curve.png", draw_training_curve(history))


def train(config: TrainingConfig, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
    """Train (or, with ``resume``, continue from ``<run>/last.pt``) as ``config`` says; see the module docstring.

    ``stop_after``: return after this many total iterations as if interrupted (a checkpoint is written) — for
    splitting a long job into time slots and for testing resumption.
    """
    context = init_distributed(config.train.device)
    try:
        return _train(config, context, resume=resume, stop_after=stop_after)
    finally:
        shutdown_distributed(context)


def _train(config: TrainingConfig, context: DistributedContext, *, resume: bool, stop_after: int | None) -> TrainResult:
    run_dir = Path(config.run.output_dir)
    if context.is_main:
        ensure_output_dir(run_dir)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    checkpoint = None
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise TrainingError(f"{run_dir / 'last.pt'}: nothing to resume; start the run without resuming",
                                option="resume")
        checkpoint = load_checkpoint(run_dir / "last.pt")

    torch.manual_seed(config.train.seed)
    train_set, val_set = open_datasets(config)
    class_names = train_set.class_names
    model_config = config.model
    initial = load_checkpoint(model_config.init_from) if checkpoint is None and model_config.init_from else None
    # a model continues with the context, pooling and normalisation its weights were trained with (an imported
    # reference FCN has 99 px of context, ceil-mode pooling and 0–255 pixels minus the mean)
    layout = (checkpoint or initial or {}).get("model_config") or {}
    model = build_segmentation_model(
        model_config.variant, len(class_names), backbone=model_config.backbone,
        pretrained=model_config.pretrained and checkpoint is None, weights_path=model_config.weights,
        learnable_upsampling=model_config.learnable_upsampling, class_names=class_names,
        context_padding=layout.get("context_padding"), ceil_mode_pooling=bool(layout.get("ceil_mode_pooling", False)),
    )
    if "mean" in layout and "std" in layout:
        model.mean, model.std = tuple(layout["mean"]), tuple(layout["std"])
    if checkpoint is not None:
        if checkpoint["class_names"] != class_names or checkpoint["model_config"]["variant"] != model_config.variant:
            raise TrainingError(f"{run_dir / 'last.pt'}: was trained with another model or classes; use a new run.output_dir")
        model.load_state_dict(checkpoint["model"])
    elif initial is not None:
        _initialise_from(model, model_config.init_from, initial)
    model.to(context.device)

    weights = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    groups = [{"params": weights, "lr_factor": 1.0, "weight_decay": config.train.weight_decay},
              {"params": biases, "lr_factor": BIAS_LR_FACTOR, "weight_decay": 0.0}]
    if config.train.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.train.lr, momentum=config.train.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.train.lr)
    use_amp = config.train.amp and context.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, history, best = 0, {"train": [], "val": []}, float("-inf")
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        start, history = int(checkpoint["iteration"]), checkpoint["history"]
        best = float(checkpoint.get("best_mean_iu", float("-inf")))
        _set_rng_state(checkpoint["rng"])
        logger.info("resuming %s at iteration %d", run_dir, start)

    network = model
    if context.enabled:
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[context.device] if context.device.type == "cuda" else None)

    augmentation = Augmentation(tuple(config.data.scale_range),
                                tuple(config.data.crop_size) if config.data.crop_size else None, config.data.flip)
    torch_train = SegmentationTorchDataset(train_set, model.mean, model.std, augmentation, seed=config.train.seed)
    accumulate = config.train.accumulate
    batches = _micro_batches(torch_train, config, context, start * accumulate)
    end = config.train.iterations if stop_after is None else min(config.train.iterations, stop_after)
    result = TrainResult(run_dir=run_dir, iterations=start, history=history)

    def save(name: str, iteration: int, rng: dict) -> None:
        save_checkpoint(run_dir / name, {
            "model": model.state_dict(), "model_config": model.model_config(), "class_names": class_names,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "iteration": iteration, "history": history, "best_mean_iu": best, "rng": rng,
        })

    network.train()
    samples_seen, clock = 0, time.perf_counter()
    with _progress(context.is_main and config.run.progress) as progress:
        task = progress.add_task("training", total=config.train.iterations, completed=start, status="") if progress else None
        for iteration in range(start, end):
            lr = learning_rate(iteration, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_factor"]
            optimizer.zero_grad(set_to_none=True)
            loss_total = torch.zeros((), device=context.device)
            for micro in range(accumulate):
                epoch, (images, labels) = next(batches)
                images = images.to(context.device, non_blocking=True)
                labels = labels.to(context.device, non_blocking=True)
                sync = network.no_sync() if context.enabled and micro < accumulate - 1 else contextlib.nullcontext()
                with sync:
                    with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                        logits = network(images)
                    loss = _loss(logits, labels, config.train.loss_reduction)
                    scaler.scale(loss / accumulate).backward()
                loss_total += loss.detach()
                samples_seen += images.shape[0] * context.world_size
            loss_value = float(context.all_reduce_sum(loss_total / accumulate)) / context.world_size
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"loss became {loss_value} at iteration {iteration + 1}; training stopped. Lower train.lr "
                    f"(now {config.train.lr:g}), check the data, or resume from {run_dir / 'last.pt'}"
                )
            scaler.step(optimizer)
            scaler.update()
            done = iteration + 1
            result.losses.append(loss_value)
            history["train"].append({"iteration": done, "loss": loss_value, "lr": lr})
            if task is not None:
                progress.update(task, completed=done, status=f"loss {loss_value:.4f}")
            if context.is_main and (done % config.train.log_interval == 0 or done == end):
                elapsed = time.perf_counter() - clock
                logger.info("epoch %d  it %d/%d  loss %.4f  lr %.3g  %.1f img/s", epoch, done,
                            config.train.iterations, loss_value, lr, samples_seen / max(elapsed, 1e-9))
                samples_seen, clock = 0, time.perf_counter()
            validate = val_set is not None and (done % config.train.val_interval == 0 or done == config.train.iterations)
            if validate:
                if context.is_main:  # a kill from here to "validation at it N" interrupts validation (tests rely on it)
                    logger.info("validating at it %d", done)
                scores = evaluate(network, val_set, context, batch_size=config.train.val_batch_size, amp=use_amp,
                                  progress=progress)
                history["val"].append({"iteration": done, **scores})
                result.last_scores = scores
                if context.is_main:
                    logger.info("validation at it %d: pixel acc %.4f  mean acc %.4f  mean IU %.4f  fwIU %.4f", done,
                                scores["pixel_accuracy"], scores["mean_class_accuracy"], scores["mean_iu"], scores["fw_iu"])
                if scores["mean_iu"] > best:
                    best = scores["mean_iu"]
                    if context.is_main:
                        save("best.pt", done, _rng_state())
            if done % config.train.checkpoint_interval == 0 or done == end or validate:
                if context.is_main:
                    save("last.pt", done, _rng_state())
                    _save_run_files(run_dir, history)
                context.barrier()
            result.iterations = done
    if context.is_main and val_set is None:  # no validation: the last weights are the best we know
        save("best.pt", result.iterations, _rng_state())
    result.best_mean_iu = best
    return result


def evaluate_checkpoint(
    checkpoint: str | Path, dataset_path: str | Path, *, split: str | None = None, device: str = "auto",
    batch_size: int = 1, progress: bool = True,
) -> dict:
    """Scores of a trained checkpoint on a dataset folder (runs under torchrun too: ranks split the images)."""
    context = init_distributed(device)
    try:
        model, class_names, description = load_segmentation_model(checkpoint, context.device)
        dataset = open_eval_dataset(dataset_path, split, class_names)
        if dataset.class_names != class_names:
            raise DatasetError(
                f"{dataset_path}: classes {dataset.class_names[:4]}… differ from the checkpoint's {class_names[:4]}…"
            )
        with _progress(context.is_main and progress) as bar:
            scores = evaluate(model, dataset, context, batch_size=batch_size, progress=bar)
        published = published_scores(description, split)
        return scores if published is None else {**scores, "published": published}
    finally:
        shutdown_distributed(context)
