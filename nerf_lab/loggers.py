"""Where a training run's scalars, images and hyperparameters go: the logger contract.

The trainer (and :mod:`nerf_lab.run_logs`) talk only to :class:`Logger`; the entry points
build the loggers of the ``logger`` config group (``conf/logger/*.yaml``, one named node
each) in :func:`nerf_lab.build.build_loggers` and hand the trainer one
:class:`FanOutLogger` that forwards every call to each of them.

* :class:`TensorBoardLogger` (default): event files in the run directory, every tag the
  trainer has always written (``train/loss/<term>``, ``eval/psnr``, ``render/heldout``,
  the HParams dashboard, ...).
* :class:`CSVLogger`: ``metrics.csv`` in long format (``step,tag,value,wall_time``), so a
  new tag never changes the header; images optionally as PNGs.
* :class:`WandbLogger` (extra ``wandb``): offline by default, files under
  ``<run_dir>/wandb``; a resume continues the same W&B run id.
* :class:`MLFlowLogger` (extra ``mlflow``): a local file store in ``<run_dir>/mlruns``
  unless a ``tracking_uri`` is given; a resume continues the same MLflow run.

Life cycle: a logger is built (its arguments checked, its package imported: a missing
extra is an error before any data is loaded), :meth:`Logger.start` is called once when
training starts (with the step it starts or resumes from), then ``log_*`` calls, and
:meth:`Logger.close` with the run's outcome. docs/outputs.md ("Loggers") has the details.
"""

from __future__ import annotations

import abc
import csv
import importlib
import io
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("nerf_lab")

#: ``close(status)``: how the run ended.
STATUSES = ("completed", "interrupted", "failed")
#: The columns of :class:`CSVLogger`'s file.
CSV_HEADER = ("step", "tag", "value", "wall_time")
WANDB_MODES = ("offline", "online", "disabled")


class MissingExtraError(ValueError, ImportError):
    """A logger's optional package is not installed (names the extra to install)."""


def require_extra(module: str, extra: str, option: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming the nerf_lab extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"logger={option} needs the {module!r} package, which cannot be imported ({e}). "
            f"Install it with:  pip install 'nerf_lab[{extra}]'  (in a checkout: "
            f"pip install -e '.[{extra}]')"
        ) from None


@dataclass(frozen=True)
class RunInfo:
    """What a logger learns when training starts.

    Attributes:
        run_dir: the run directory (every logger writes under it unless told otherwise).
        step: the iteration training starts from (0, or the resumed checkpoint's step).
        run_id: nerf_lab's run id (a resume keeps it; ``None`` for a hand-built trainer).
        config: the run's resolved config as plain containers.
    """

    run_dir: Path
    step: int = 0
    run_id: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)


def image_to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An ``(H, W, C)`` image (C = 1, 3 or 4; floats in [0, 1] or uint8) as uint8 numpy.

    Raises:
        ValueError: for another shape.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image.float() if image.is_floating_point() else image).numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image: expected shape (H, W, C) with C in 1, 3, 4, got {image.shape}")
    if image.dtype == np.uint8:
        return image
    return (np.clip(np.nan_to_num(image.astype(np.float64)), 0, 1) * 255 + 0.5).astype(np.uint8)


def _check(problems: list[str], key: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        problems.append(f"{key}={value!r}: must be {allowed}")


def _raise(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


def _opt_str(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value.strip()))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    from nerf_lab.checkpoint import write_json_atomic

    write_json_atomic(path, dict(data))


# --------------------------------------------------------------------------- the contract


class Logger(abc.ABC):
    """The contract between the trainer and a logging backend.

    Scalars are Python floats keyed by ``/``-separated tags (``train/loss/color``), steps
    are training iterations. Only :meth:`log_scalars` is required; the other methods
    default to doing nothing (a backend without images ignores them).
    """

    def start(self, run: RunInfo) -> None:  # noqa: B027 (optional hook)
        """Open files or runs; called once before the first ``log_*`` call."""

    @abc.abstractmethod
    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Log several scalars at one step (``{"train/loss": 0.01, ...}``)."""

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar (``log_scalars({tag: value}, step)``)."""
        self.log_scalars({tag: value}, step)

    def log_image(self, tag: str, image: torch.Tensor | np.ndarray, step: int) -> None:  # noqa: B027
        """An ``(H, W, 3)`` image, floats in [0, 1] (or uint8)."""

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:  # noqa: B027
        """The run's hyperparameters (bools, numbers, short strings) and the metric tags
        to show beside them (with placeholder values, as TensorBoard's HParams wants)."""

    def log_text(self, tag: str, text: str, step: int) -> None:  # noqa: B027
        """A text (e.g. the start-up summary)."""

    def flush(self) -> None:  # noqa: B027
        """Write what is buffered (before a checkpoint or an interruption)."""

    def close(self, status: str = "completed") -> None:  # noqa: B027
        """Flush and release files or runs; ``status`` is one of :data:`STATUSES`."""


class FanOutLogger(Logger):
    """Forwards every call to each of ``loggers`` in order (none: logs nothing).

    ``active`` is true between :meth:`start` and :meth:`close`. :meth:`close` closes every
    logger even if one of them fails, then re-raises the first error.
    """

    def __init__(self, loggers: Sequence[Logger] = ()) -> None:
        bad = [type(x).__name__ for x in loggers if not isinstance(x, Logger)]
        if bad:
            raise ValueError(f"loggers: {bad} are not nerf_lab.loggers.Logger instances")
        self.loggers = list(loggers)
        self.active = False

    def start(self, run: RunInfo) -> None:
        for x in self.loggers:
            x.start(run)
        self.active = True

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        for x in self.loggers:
            x.log_scalars(scalars, step)

    def log_image(self, tag: str, image: torch.Tensor | np.ndarray, step: int) -> None:
        for x in self.loggers:
            x.log_image(tag, image, step)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        for x in self.loggers:
            x.log_hparams(hparams, metrics)

    def log_text(self, tag: str, text: str, step: int) -> None:
        for x in self.loggers:
            x.log_text(tag, text, step)

    def flush(self) -> None:
        for x in self.loggers:
            x.flush()

    def close(self, status: str = "completed") -> None:
        self.active = False
        first: BaseException | None = None
        for x in self.loggers:
            try:
                x.close(status)
            except Exception as e:  # close the others first
                log.error("Closing logger %s failed: %s", type(x).__name__, e)
                first = first or e
        if first is not None:
            raise first


# --------------------------------------------------------------------------- TensorBoard


class TensorBoardLogger(Logger):
    """TensorBoard event files in the run directory (``tensorboard --logdir outputs``).

    A resume purges the events logged after the resumed checkpoint's step by the attempt
    that was interrupted (``purge_step``), so the curves have no doubled stretch.
    Hyperparameters go into the run's own event file (not a sub-run) for the HParams
    dashboard.

    Args:
        flush_secs: seconds between writes of queued events to disk (>= 1).
        max_queue: events queued before a write (>= 1).
    """

    def __init__(self, flush_secs: int = 120, max_queue: int = 10) -> None:
        problems: list[str] = []
        for key, value in (("flush_secs", flush_secs), ("max_queue", max_queue)):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            _check(problems, key, value, ok, "an integer >= 1")
        _raise(problems)
        self.flush_secs, self.max_queue = flush_secs, max_queue
        self.writer: Any = None

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            log_dir=str(run.run_dir),
            purge_step=run.step + 1 if run.step else None,
            max_queue=self.max_queue,
            flush_secs=self.flush_secs,
        )
        log.info("TensorBoard: tensorboard --logdir %s", run.run_dir)

    def _writer(self) -> Any:
        if self.writer is None:
            raise RuntimeError("TensorBoardLogger: start() was not called")
        return self.writer

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        w = self._writer()
        for tag, value in scalars.items():
            w.add_scalar(tag, value, step)

    def log_image(self, tag: str, image: torch.Tensor | np.ndarray, step: int) -> None:
        self._writer().add_image(tag, image, step, dataformats="HWC")

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        if not hparams:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        exp, ssi, sei = hparams_summary(dict(hparams), dict(metrics))
        fw = self._writer()._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._writer().add_text(tag, text, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self, status: str = "completed") -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


# --------------------------------------------------------------------------- CSV


class CSVLogger(Logger):
    """Scalars as rows ``step,tag,value,wall_time`` of one CSV file in the run directory.

    The long format keeps one header whatever tags appear later. Each call's rows are
    flushed at once (the file is readable while training runs). A resume appends to the
    file (no second header) after dropping the rows of steps after the resumed one
    (written after the checkpoint by the interrupted attempt, and about to be redone).
    Images are written as PNGs ``images/<tag>/step_<N>.png`` when ``save_images``, else
    ignored (they are in TensorBoard, ``eval/`` and ``renders/``); hyperparameters and
    texts are not written (the run's config is in ``config_resolved.yaml``).

    Args:
        filename: the file's name in the run directory (no folders).
        save_images: also write logged images as PNGs.
    """

    def __init__(self, filename: str = "metrics.csv", save_images: bool = False) -> None:
        problems: list[str] = []
        ok = (
            isinstance(filename, str)
            and bool(filename.strip())
            and "/" not in filename
            and "\\" not in filename
            and filename not in (".", "..")
        )
        _check(problems, "filename", filename, ok, "a file name without folders")
        ok = isinstance(save_images, bool)
        _check(problems, "save_images", save_images, ok, "true or false")
        _raise(problems)
        self.filename, self.save_images = filename, save_images
        self.path: Path | None = None
        self._file: Any = None
        self._csv: Any = None

    def start(self, run: RunInfo) -> None:
        Path(run.run_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(run.run_dir) / self.filename
        self.image_dir = Path(run.run_dir) / "images"
        if self.path.exists() and self.path.stat().st_size:
            self._keep_until(run.step)
            self._file = open(self.path, "a", newline="")  # noqa: SIM115 (closed in close)
            self._csv = csv.writer(self._file, lineterminator="\n")
        else:
            self._file = open(self.path, "w", newline="")  # noqa: SIM115
            self._csv = csv.writer(self._file, lineterminator="\n")
            self._csv.writerow(CSV_HEADER)
            self._file.flush()

    def _keep_until(self, step: int) -> None:
        """Drop the rows of steps after ``step`` and a row cut short by a kill (atomically),
        after checking the header."""
        from nerf_lab.fileio import atomic_write_data

        assert self.path is not None
        with open(self.path, newline="") as f:
            raw = f.read()
        rows = list(csv.reader(io.StringIO(raw)))
        if not raw.endswith("\n"):
            rows = rows[:-1] if len(rows) > 1 else rows  # the last row was being written
        if not rows or tuple(rows[0]) != CSV_HEADER:
            raise ValueError(
                f"{self.path} exists but is not a nerf_lab metrics file (its header is "
                f"{rows[0] if rows else []!r}, expected {list(CSV_HEADER)}): move it away or "
                "set logger.csv.filename"
            )
        kept = [r for r in rows[1:] if len(r) == len(CSV_HEADER) and _step_of(r) <= step]
        if len(kept) == len(rows) - 1 and raw.endswith("\n"):
            return
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(CSV_HEADER)
        w.writerows(kept)
        atomic_write_data(self.path, text.getvalue().encode())
        log.info(
            "%s: dropped %d rows after step %d (resume)", self.path, len(rows) - 1 - len(kept), step
        )

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        if self._csv is None:
            raise RuntimeError("CSVLogger: start() was not called")
        now = time.time()
        self._csv.writerows(
            (int(step), tag, repr(float(value)), f"{now:.3f}") for tag, value in scalars.items()
        )
        self._file.flush()

    def log_image(self, tag: str, image: torch.Tensor | np.ndarray, step: int) -> None:
        if not self.save_images:
            return
        from nerf_lab.video import write_image

        safe = re.sub(r"[^\w.\-]+", "_", tag)
        write_image(self.image_dir / safe / f"step_{int(step):08d}.png", image_to_uint8(image))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self, status: str = "completed") -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._csv = None


def _step_of(row: Sequence[str]) -> float:
    try:
        return int(row[0])
    except ValueError:
        return float("inf")


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """:class:`CSVLogger`'s file as ``{tag: [(step, value), ...]}`` in file order."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["tag"], []).append((int(row["step"]), float(row["value"])))
    return out


# --------------------------------------------------------------------------- Weights & Biases


class WandbLogger(Logger):
    """Weights & Biases (extra ``wandb``), offline by default (no log-in; files only).

    The run's files go to ``<run_dir>/wandb/`` (offline: ``wandb sync <that folder>``
    uploads them later); its config is the run's resolved config (hyperparameters under
    ``hparams``), its name the run directory's name unless ``name`` is set. Scalars are
    logged against ``trainer/step`` (W&B's own ``_step`` only counts calls), so a resume
    that redoes steps does not collide with W&B's monotonic step. The W&B run id (nerf_lab's
    run id) is kept in ``<run_dir>/wandb_run.json``: a resume of the same nerf_lab run
    continues it.

    Args:
        project: the W&B project.
        entity: team or user (``None``: your default entity).
        mode: ``offline`` | ``online`` | ``disabled``.
        name: the run's display name (``None``: the run directory's name).
        group: a group name (e.g. a sweep's), or ``None``.
        tags: tags of the run.
        log_images: log previews and the turntable as images.
    """

    def __init__(
        self,
        project: str = "nerf",
        entity: str | None = None,
        mode: str = "offline",
        name: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        log_images: bool = True,
    ) -> None:
        problems: list[str] = []
        ok = isinstance(project, str) and bool(project.strip())
        _check(problems, "project", project, ok, "a non-empty string")
        for key, value in (("entity", entity), ("name", name), ("group", group)):
            _check(problems, key, value, _opt_str(value), "null or a string")
        _check(problems, "mode", mode, mode in WANDB_MODES, f"one of {WANDB_MODES}")
        ok = not isinstance(tags, str) and all(isinstance(t, str) for t in tags)
        _check(problems, "tags", tags, ok, "a list of strings")
        ok = isinstance(log_images, bool)
        _check(problems, "log_images", log_images, ok, "true or false")
        _raise(problems)
        self.wandb = require_extra("wandb", "wandb", "wandb")
        self.project, self.entity, self.mode = project, entity, mode
        self.name, self.group, self.tags = name, group, list(tags)
        self.log_images = log_images
        self.run: Any = None

    def start(self, run: RunInfo) -> None:
        wandb = self.wandb
        Path(run.run_dir).mkdir(parents=True, exist_ok=True)
        id_file = Path(run.run_dir) / "wandb_run.json"
        saved = _read_json(id_file)
        if run.run_id is not None and saved.get("run_id") == run.run_id and saved.get("wandb_id"):
            wandb_id = str(saved["wandb_id"])
        else:
            wandb_id = run.run_id or secrets.token_hex(8)
            _write_json(id_file, {"run_id": run.run_id, "wandb_id": wandb_id})
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(run.run_dir),
            name=self.name or Path(run.run_dir).name,
            group=self.group,
            tags=self.tags or None,
            config=dict(run.config),
            id=wandb_id,
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(console="off"),
        )
        self.run.define_metric("trainer/step")
        self.run.define_metric("*", step_metric="trainer/step")
        log.info("W&B (%s): run %s in %s", self.mode, wandb_id, Path(run.run_dir) / "wandb")

    def _run(self) -> Any:
        if self.run is None:
            raise RuntimeError("WandbLogger: start() was not called")
        return self.run

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        self._run().log({**{k: float(v) for k, v in scalars.items()}, "trainer/step": int(step)})

    def log_image(self, tag: str, image: torch.Tensor | np.ndarray, step: int) -> None:
        if self.log_images:
            self._run().log(
                {tag: self.wandb.Image(image_to_uint8(image)), "trainer/step": int(step)}
            )

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        self._run().config.update({"hparams": dict(hparams)}, allow_val_change=True)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._run().summary[tag] = text

    def close(self, status: str = "completed") -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "completed" else 1)
            self.run = None


# --------------------------------------------------------------------------- MLflow

#: Characters MLflow accepts in metric and parameter names; others become ``_``.
_MLFLOW_BAD = re.compile(r"[^\w\-./ :]")
_MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


def mlflow_name(tag: str) -> str:
    """``tag`` as an MLflow metric or param name: the first ``/`` kept (MLflow's UI groups
    charts by it), later ones as ``.`` (MLflow's file store keeps ``a/b`` as a file, so
    ``train/loss`` and ``train/loss/color`` could not both exist), characters MLflow
    refuses as ``_``: ``train/loss/color`` → ``train/loss.color``,
    ``geometry/fscore@0.05`` → ``geometry/fscore_0.05``."""
    head, sep, rest = _MLFLOW_BAD.sub("_", tag).partition("/")
    return head + sep + rest.replace("/", ".")


class MLFlowLogger(Logger):
    """MLflow (extra ``mlflow``; ``mlflow-skinny`` is enough for the file store).

    Without ``tracking_uri`` the runs go to a local file store in ``<run_dir>/mlruns``
    (``mlflow ui --backend-store-uri <run_dir>/mlruns``); MLflow keeps that store in
    maintenance mode, so this logger sets ``MLFLOW_ALLOW_FILE_STORE=true`` for it. Params
    are the flattened hyperparameters; metrics every scalar (named by :func:`mlflow_name`:
    ``train/loss/color`` → ``train/loss.color``); images (``log_images``) and the resolved config
    (``config.json``) go in as artifacts. The MLflow run id is kept in
    ``<run_dir>/mlflow_run.json``: a resume of the same nerf_lab run continues it.

    Args:
        tracking_uri: ``None`` (the run directory's file store) or any MLflow tracking URI
            (``file:///abs/mlruns`` to share one store between runs, ``http://host:5000``).
        experiment_name: the MLflow experiment (created if missing).
        run_name: the run's name (``None``: the run directory's name).
        tags: tags of the run.
        log_images: log previews and the turntable as image artifacts.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "nerf",
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        log_images: bool = True,
    ) -> None:
        problems: list[str] = []
        for key, value in (("tracking_uri", tracking_uri), ("run_name", run_name)):
            _check(problems, key, value, _opt_str(value), "null or a string")
        ok = isinstance(experiment_name, str) and bool(experiment_name.strip())
        _check(problems, "experiment_name", experiment_name, ok, "a non-empty string")
        ok = tags is None or isinstance(tags, Mapping)
        _check(problems, "tags", tags, ok, "a mapping of names to values")
        ok = isinstance(log_images, bool)
        _check(problems, "log_images", log_images, ok, "true or false")
        _raise(problems)
        self.mlflow = require_extra("mlflow", "mlflow", "mlflow")
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.run_name, self.tags = run_name, {str(k): str(v) for k, v in (tags or {}).items()}
        self.log_images = log_images
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, run: RunInfo) -> None:
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or (Path(run.run_dir).resolve() / "mlruns").as_uri()
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        id_file = Path(run.run_dir) / "mlflow_run.json"
        saved = _read_json(id_file)
        self.run_id = None
        if (
            run.run_id is not None
            and saved.get("run_id") == run.run_id
            and saved.get("tracking_uri") == uri
            and saved.get("mlflow_run_id")
        ):
            try:
                self.client.get_run(saved["mlflow_run_id"])
                self.run_id = str(saved["mlflow_run_id"])
                self.client.update_run(self.run_id, status="RUNNING")
            except self.mlflow.exceptions.MlflowException as e:
                log.warning("MLflow run %s not found (%s): starting a new one", saved, e)
                self.run_id = None
        if self.run_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            exp_id = (
                exp.experiment_id
                if exp is not None
                else self.client.create_experiment(self.experiment_name)
            )
            created = self.client.create_run(
                exp_id, run_name=self.run_name or Path(run.run_dir).name, tags=self.tags
            )
            self.run_id = created.info.run_id
            _write_json(
                id_file, {"run_id": run.run_id, "mlflow_run_id": self.run_id, "tracking_uri": uri}
            )
            if run.config:
                self.client.log_dict(self.run_id, dict(run.config), "config.json")
        log.info("MLflow: run %s at %s", self.run_id, uri)

    def _client(self) -> Any:
        if self.client is None or self.run_id is None:
            raise RuntimeError("MLFlowLogger: start() was not called")
        return self.client

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_name(k), float(v), now, int(step)) for k, v in scalars.items()]
        self._client().log_batch(self.run_id, metrics=metrics)

    def log_image(self, tag: str, image: torch.Tensor | np.ndarray, step: int) -> None:
        if self.log_images:
            self._client().log_image(
                self.run_id, image_to_uint8(image), key=mlflow_name(tag), step=int(step)
            )

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Params: MLflow's are immutable, so a resume logs only those not yet set (a
        changed value is kept as it was, with a warning)."""
        from mlflow.entities import Param

        client = self._client()
        old = client.get_run(self.run_id).data.params
        params = {mlflow_name(k): str(v) for k, v in hparams.items()}
        changed = {k: (old[k], v) for k, v in params.items() if k in old and old[k] != v}
        if changed:
            log.warning("MLflow params are immutable; kept the first values of %s", changed)
        new = [Param(k, v) for k, v in params.items() if k not in old]
        if new:
            client.log_batch(self.run_id, params=new)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._client().log_text(self.run_id, text, f"{mlflow_name(tag)}.txt")

    def close(self, status: str = "completed") -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, _MLFLOW_STATUS.get(status, "FAILED"))
            self.client = None
