"""The logger group (conf/logger): the contract and its fan-out, each backend's files
after a tiny run (csv, TensorBoard, W&B offline, MLflow file store) cross-checked against
each other, resume, missing extras, and composition of every option."""

from __future__ import annotations

import glob
import inspect
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nerf_lab.build import build_loggers, build_trainer
from nerf_lab.loggers import (
    CSV_HEADER,
    CSVLogger,
    FanOutLogger,
    Logger,
    MissingExtraError,
    MLFlowLogger,
    RunInfo,
    TensorBoardLogger,
    WandbLogger,
    image_to_uint8,
    mlflow_name,
    read_metrics_csv,
)
from tests.conftest import CONF, TINY, compose_cfg, group_options


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


HAS_WANDB, HAS_MLFLOW = _installed("wandb"), _installed("mlflow")
needs_wandb = pytest.mark.skipif(not HAS_WANDB, reason="the wandb extra is not installed")
needs_mlflow = pytest.mark.skipif(not HAS_MLFLOW, reason="the mlflow extra is not installed")
CLASSES = {
    "tensorboard": TensorBoardLogger,
    "csv": CSVLogger,
    "wandb": WandbLogger,
    "mlflow": MLFlowLogger,
}


# --------------------------------------------------------------------------- the contract


class Recorder(Logger):
    """Records every call it gets."""

    def __init__(self, fail_close: bool = False) -> None:
        self.calls: list[tuple] = []
        self.fail_close = fail_close

    def start(self, run):
        self.calls.append(("start", run.step))

    def log_scalars(self, scalars, step):
        self.calls.append(("scalars", dict(scalars), step))

    def log_image(self, tag, image, step):
        self.calls.append(("image", tag, tuple(image.shape), step))

    def log_hparams(self, hparams, metrics):
        self.calls.append(("hparams", dict(hparams), dict(metrics)))

    def log_text(self, tag, text, step):
        self.calls.append(("text", tag, text, step))

    def flush(self):
        self.calls.append(("flush",))

    def close(self, status="completed"):
        self.calls.append(("close", status))
        if self.fail_close:
            raise OSError("disk gone")


def test_fan_out_forwards_every_call_to_each_logger(tmp_path):
    a, b = Recorder(), Recorder()
    fan = FanOutLogger([a, b])
    assert not fan.active
    fan.start(RunInfo(tmp_path, step=3))
    assert fan.active
    fan.log_scalars({"x": 1.0, "y": 2.0}, 4)
    fan.add_scalar("z", 3.0, 5)
    fan.log_image("img", torch.zeros(4, 5, 3), 6)
    fan.log_hparams({"lr": 0.1}, {"eval/psnr": 0.0})
    fan.log_text("startup", "hello", 7)
    fan.flush()
    fan.close("interrupted")
    assert not fan.active
    expected = [
        ("start", 3),
        ("scalars", {"x": 1.0, "y": 2.0}, 4),
        ("scalars", {"z": 3.0}, 5),
        ("image", "img", (4, 5, 3), 6),
        ("hparams", {"lr": 0.1}, {"eval/psnr": 0.0}),
        ("text", "startup", "hello", 7),
        ("flush",),
        ("close", "interrupted"),
    ]
    assert a.calls == expected and b.calls == expected


def test_fan_out_closes_every_logger_then_raises_the_first_error(tmp_path):
    a, b = Recorder(fail_close=True), Recorder()
    fan = FanOutLogger([a, b])
    fan.start(RunInfo(tmp_path))
    with pytest.raises(OSError, match="disk gone"):
        fan.close()
    assert b.calls[-1] == ("close", "completed")


def test_fan_out_refuses_what_is_not_a_logger():
    with pytest.raises(ValueError, match="not nerf_lab.loggers.Logger"):
        FanOutLogger([Recorder(), object()])


def test_image_to_uint8_and_mlflow_names():
    img = torch.tensor([[[0.0, 0.5, 1.0]], [[-1.0, 2.0, 0.25]]])  # (2, 1, 3)
    out = image_to_uint8(img)
    assert out.dtype == np.uint8 and out.shape == (2, 1, 3)
    assert out.tolist() == [[[0, 128, 255]], [[0, 255, 64]]]
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        image_to_uint8(torch.zeros(3, 4))
    assert mlflow_name("geometry/fscore@0.05") == "geometry/fscore_0.05"
    assert mlflow_name("train/loss/color") == "train/loss.color"
    assert mlflow_name("a/b/c") == "a/b.c" and mlflow_name("train_seconds") == "train_seconds"


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: TensorBoardLogger(flush_secs=0), "flush_secs=0"),
        (lambda: TensorBoardLogger(max_queue=True), "max_queue=True"),
        (lambda: CSVLogger(filename="sub/metrics.csv"), "filename='sub/metrics.csv'"),
        (lambda: CSVLogger(filename=""), "filename=''"),
        (lambda: CSVLogger(save_images="yes"), "save_images='yes'"),
        (lambda: WandbLogger(mode="cloud"), "mode='cloud'.*offline"),
        (lambda: WandbLogger(project=""), "project=''"),
        (lambda: WandbLogger(tags="a"), "tags='a'"),
        (lambda: MLFlowLogger(experiment_name=" "), "experiment_name=' '"),
        (lambda: MLFlowLogger(tracking_uri=3), "tracking_uri=3"),
    ],
)
def test_constructors_refuse_bad_values_naming_key_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_csv_logger_refuses_a_foreign_file(tmp_path):
    (tmp_path / "metrics.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a nerf_lab metrics file"):
        CSVLogger().start(RunInfo(tmp_path, step=5))


def test_csv_logger_resume_drops_later_steps_and_a_cut_row(tmp_path):
    header = "step,tag,value,wall_time\n"
    rows = "1,a,0.5,1.0\n2,a,0.25,2.0\n3,a,0.125,3.0\n"
    (tmp_path / "metrics.csv").write_text(header + rows + "4,a,0.0")  # killed mid-row
    logger = CSVLogger()
    logger.start(RunInfo(tmp_path, step=2))
    logger.log_scalars({"a": 9.0}, 3)
    logger.close()
    assert read_metrics_csv(tmp_path / "metrics.csv") == {"a": [(1, 0.5), (2, 0.25), (3, 9.0)]}
    assert (tmp_path / "metrics.csv").read_text().count("step,") == 1
    (tmp_path / "metrics.csv").write_text(header + "1,a,0.5,1.0")  # cut, nothing to drop
    logger = CSVLogger()
    logger.start(RunInfo(tmp_path, step=5))
    logger.log_scalars({"a": 7.0}, 6)
    logger.close()
    assert read_metrics_csv(tmp_path / "metrics.csv") == {"a": [(6, 7.0)]}


def test_csv_logger_writes_images_only_when_asked(tmp_path):
    for save, expected in ((False, []), (True, ["images/render_heldout/step_00000007.png"])):
        run_dir = tmp_path / str(save)
        logger = CSVLogger(save_images=save)
        logger.start(RunInfo(run_dir))
        logger.log_image("render/heldout", torch.full((4, 6, 3), 0.5), 7)
        logger.close()
        pngs = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.png"))
        assert pngs == expected
    import imageio.v3 as iio

    assert iio.imread(run_dir / expected[0]).shape == (4, 6, 3)


# --------------------------------------------------------------------------- composition


@pytest.mark.parametrize("option", group_options("logger"))
def test_every_logger_option_composes_and_builds(option):
    assert {"tensorboard", "csv", "wandb", "mlflow"} <= set(group_options("logger"))
    if option == "wandb" and not HAS_WANDB or option == "mlflow" and not HAS_MLFLOW:
        pytest.skip(f"the {option} extra is not installed")
    fan = build_loggers(compose_cfg([*TINY, f"logger={option}"]))
    assert [type(x) for x in fan.loggers] == [CLASSES[option]]


@pytest.mark.parametrize("option", group_options("logger"))
def test_logger_yaml_matches_its_constructor_and_is_commented(option):
    path = CONF / "logger" / f"{option}.yaml"
    values = OmegaConf.to_container(OmegaConf.load(path))[option]
    target = values.pop("_target_")
    cls = CLASSES[option]
    assert target == f"nerf_lab.loggers.{cls.__name__}"
    params = inspect.signature(cls).parameters
    assert set(values) == set(params)
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("${"):
            continue  # an interpolation (e.g. the experiment's name)
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("  ") and ":" in ln]
    keys = [ln for ln in lines if "_target_" not in ln]
    assert keys and all("#" in ln for ln in keys), keys


def test_default_is_tensorboard_and_lists_combine():
    def names(overrides):
        return [type(x).__name__ for x in build_loggers(compose_cfg([*TINY, *overrides])).loggers]

    assert names([]) == ["TensorBoardLogger"]
    assert names(["logger=[tensorboard,csv]"]) == ["TensorBoardLogger", "CSVLogger"]
    assert names(["+logger=csv"]) == ["TensorBoardLogger", "CSVLogger"]  # appended
    assert names(["logger=csv"]) == ["CSVLogger"]
    assert names(["logger=[]"]) == []
    assert names(["logger=[tensorboard,csv]", "logger.csv=null"]) == ["TensorBoardLogger"]


def test_logger_keys_are_checked_before_anything_is_built():
    cfg = compose_cfg([*TINY, "logger=csv", "+logger.csv.file_name=x.csv"])
    with pytest.raises(ValueError, match=r"logger\.csv\.file_name: unknown key"):
        build_loggers(cfg)
    cfg = compose_cfg([*TINY, "logger=csv", "logger.csv.filename=a/b.csv"])
    with pytest.raises(ValueError, match=r"logger\.csv: filename='a/b.csv'"):
        build_loggers(cfg)


@pytest.mark.parametrize("module,option", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_extra_fails_before_the_data_naming_the_extra(
    module, option, monkeypatch, tmp_path
):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    import nerf_lab.build as build_module

    def no_data(cfg):
        raise AssertionError("the data were built before the loggers were checked")

    monkeypatch.setattr(build_module, "build_scene", no_data)
    cfg = compose_cfg([*TINY, f"logger=[tensorboard,{option}]"])
    with pytest.raises(MissingExtraError) as e:
        build_trainer(cfg, tmp_path)
    assert isinstance(e.value, ValueError) and isinstance(e.value, ImportError)
    assert f"pip install 'nerf_lab[{option}]'" in str(e.value)
    assert f"logger={option}" in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


# --------------------------------------------------------------------------- a tiny run


RUN = [
    *TINY,
    "trainer.n_iter=4",
    "trainer.log_every=1",
    "trainer.eval_every=2",
    "trainer.eval_max_views=1",
    "trainer.render_every=2",
    "trainer.checkpoint_every=2",
]


def _wandb_records(path: Path):
    """The records of a W&B transaction log (``run-<id>.wandb``: LevelDB log format, 32 KiB
    blocks of ``crc32, length, type`` + data chunks, after a 7-byte ``:W&B`` header)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    i, chunk = 7, b""
    while i + 7 <= len(data):
        left = block - i % block
        _, length, kind = struct.unpack("<IHB", data[i : i + 7])
        if left < 7 or (length == 0 and kind == 0):
            i += left  # block padding
            continue
        chunk += data[i + 7 : i + 7 + length]
        i += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def wandb_history(run_dir: Path) -> tuple[list[str], dict[str, list[tuple[int, float]]], dict]:
    """(offline run ids, {tag: [(trainer/step, value)]}, the run's config) of every offline
    run in ``run_dir/wandb``."""
    ids, history, config = [], {}, {}
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        for rec in _wandb_records(Path(path)):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                ids.append(rec.run.run_id)
                for item in rec.run.config.update:
                    config[item.key] = json.loads(item.value_json)
            elif kind == "history":
                row = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in rec.history.item
                }
                for k, v in row.items():
                    if not k.startswith("_") and k != "trainer/step" and isinstance(v, float | int):
                        history.setdefault(k, []).append((int(row["trainer/step"]), float(v)))
    return ids, history, config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run to 4 iterations with every installed logger, then a resume to 6 (after
    a row that the 'interrupted attempt' wrote past the checkpoint)."""
    names = ["tensorboard", "csv"] + ["wandb"] * HAS_WANDB + ["mlflow"] * HAS_MLFLOW
    base = tmp_path_factory.mktemp("loggers")
    run_dir = base / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NERF_LAB_CACHE_DIR", str(base / "cache"))
        mp.setenv("WANDB_MODE", "offline")  # as a user without an account would
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(base / var.lower()))
        mp.delenv("WANDB_API_KEY", raising=False)
        overrides = [*RUN, f"logger=[{','.join(names)}]"]
        metrics = build_trainer(compose_cfg(overrides), run_dir).fit()
        first = {
            "csv": (run_dir / "metrics.csv").read_text(),
            "wandb": wandb_history(run_dir) if HAS_WANDB else None,
            "wandb_json": _json(run_dir / "wandb_run.json"),
            "mlflow_json": _json(run_dir / "mlflow_run.json"),
        }
        with open(run_dir / "metrics.csv", "a") as f:  # written after the step-4 checkpoint
            f.write("5,train/loss,123.0,0.0\n")
        resumed = [*overrides, "trainer.n_iter=6", "trainer.resume=true"]
        build_trainer(compose_cfg(resumed), run_dir).fit()
    return {"dir": run_dir, "names": names, "metrics": metrics, "first": first}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def test_csv_file_after_a_tiny_run(runs):
    text = runs["first"]["csv"]
    lines = text.splitlines()
    assert lines[0] == ",".join(CSV_HEADER)
    rows = [line.split(",") for line in lines[1:]]
    assert all(len(r) == 4 for r in rows)
    tags = {r[1] for r in rows}
    assert {"train/loss", "train/psnr", "opt/lr", "eval/psnr", "eval/ssim", "train_seconds"} <= tags
    assert {"train/loss/color", "perf/iter_s", "perf/rays_per_s"} <= tags
    loss_steps = [int(r[0]) for r in rows if r[1] == "train/loss"]
    assert loss_steps == [1, 2, 3, 4]
    psnr = [(int(r[0]), float(r[2])) for r in rows if r[1] == "eval/psnr"]
    assert [s for s, _ in psnr] == [2, 4]  # periodic (1 view) at 2, final (all) at 4
    assert psnr[-1][1] == pytest.approx(runs["metrics"]["eval/psnr"], rel=1e-12)
    assert all(float(r[3]) > 1.6e9 for r in rows)  # wall time, seconds since the epoch


def test_csv_scalars_equal_tensorboard_scalars(runs):
    """Every scalar tag, step and value is in both, also after the resume (TensorBoard's
    purge and the CSV's drop remove the same stale stretch)."""
    run_dir = runs["dir"]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    csv_rows = read_metrics_csv(run_dir / "metrics.csv")
    assert set(acc.Tags()["scalars"]) == set(csv_rows)
    for tag, rows in csv_rows.items():
        tb = sorted((e.step, e.value) for e in acc.Scalars(tag))
        assert [s for s, _ in tb] == sorted(s for s, _ in rows), tag
        assert [v for _, v in tb] == pytest.approx([v for _, v in sorted(rows)], rel=1e-6), tag
    assert {"render/heldout", "turntable"} <= set(acc.Tags()["images"])


def test_resume_appends_to_the_csv_without_a_second_header(runs):
    text = (runs["dir"] / "metrics.csv").read_text()
    assert text.count("step,tag,value,wall_time") == 1
    assert text.startswith(runs["first"]["csv"])  # the first attempt's rows kept as they were
    assert "123.0" not in text  # the row written after the checkpoint was dropped
    rows = read_metrics_csv(runs["dir"] / "metrics.csv")
    assert [s for s, _ in rows["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in rows["eval/psnr"]] == [2, 4, 6]


@needs_wandb
def test_wandb_offline_run_holds_the_logged_scalars(runs):
    ids, history, config = runs["first"]["wandb"]
    saved = runs["first"]["wandb_json"]
    assert ids == [saved["wandb_id"]]
    assert (runs["dir"] / "wandb").is_dir()
    assert config["model"]["n_hidden_neurons"] == 16  # the resolved config
    assert config["logger"]["wandb"]["mode"] == "offline"
    first_csv = runs["dir"].parent / "first.csv"
    first_csv.write_text(runs["first"]["csv"])
    for tag, rows in read_metrics_csv(first_csv).items():
        assert history[tag] == rows, tag  # the same doubles


@needs_wandb
def test_resume_keeps_the_wandb_id(runs):
    ids, history, _ = wandb_history(runs["dir"])
    wandb_id = runs["first"]["wandb_json"]["wandb_id"]
    assert len(ids) == 2 and set(ids) == {wandb_id}  # two offline attempts, one W&B run
    assert _json(runs["dir"] / "wandb_run.json") == runs["first"]["wandb_json"]
    assert [s for s, _ in history["train/loss"]] == [1, 2, 3, 4, 5, 6]


@needs_mlflow
def test_mlflow_file_store_holds_the_metric_history(runs):
    from mlflow.tracking import MlflowClient

    run_dir = runs["dir"]
    saved = runs["first"]["mlflow_json"]
    assert saved["tracking_uri"] == (run_dir / "mlruns").resolve().as_uri()
    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    run = client.get_run(saved["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "nerf"
    assert run.info.run_name == run_dir.name
    csv_rows = read_metrics_csv(run_dir / "metrics.csv")
    for tag, rows in csv_rows.items():
        history = client.get_metric_history(run.info.run_id, mlflow_name(tag))
        got = sorted((m.step, m.value) for m in history)
        assert got == sorted(rows), tag  # the same doubles
    params = run.data.params
    assert params["model.n_hidden_neurons"] == "16" and params["model"] == "NeuralRadianceField"
    assert params["trainer.n_iter"] == "4"  # immutable: the first attempt's value
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "startup.txt"} <= artifacts


@needs_mlflow
def test_resume_continues_the_mlflow_run(runs):
    saved = runs["first"]["mlflow_json"]
    assert _json(runs["dir"] / "mlflow_run.json") == saved
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    (exp,) = [e for e in client.search_experiments() if e.name == "nerf"]
    assert len(client.search_runs([exp.experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(saved["mlflow_run_id"], "train/loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]


def test_instantiated_yaml_builds_a_working_logger(tmp_path):
    """csv.yaml as it is, through Hydra, logs and reads back."""
    node = OmegaConf.load(CONF / "logger" / "csv.yaml")["csv"]
    logger = instantiate(node)
    logger.start(RunInfo(tmp_path))
    logger.log_scalars({"a/b": 0.5}, 3)
    logger.close()
    assert read_metrics_csv(tmp_path / "metrics.csv") == {"a/b": [(3, 0.5)]}
