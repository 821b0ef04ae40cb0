"""The ``_target_`` allow-list: a run directory's config cannot run arbitrary code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from nerf_lab.safety import (
    DEFAULT_ALLOW,
    DisallowedTargetError,
    check_targets,
    find_targets,
    module_importable,
    resolve_target,
    safe_instantiate,
    target_problem,
)
from nerf_lab.train import CONF_DIR  # noqa: E402  (registers what composing needs)

CONF = Path(CONF_DIR)

CALLS: list[tuple] = []


def record_call(*args, **kwargs):
    """A callable the tests try to reach through a config; it must never run."""
    CALLS.append((args, kwargs))
    return "called"


def test_find_targets_walks_dicts_lists_and_partial_nodes():
    cfg = {
        "_target_": "root.T",
        "model": {"_target_": "a.B", "sub": [{"x": 1}, {"_target_": "c.D", "_partial_": True}]},
        "items": [[{"_target_": "e.F"}], 3, "s"],
        "plain": {"target": "not_a_target"},
        "args": {"_target_": "g.H", "_args_": [{"_target_": "i.J"}]},
    }
    assert find_targets(cfg) == [
        ("_target_", "root.T"),
        ("model._target_", "a.B"),
        ("model.sub[1]._target_", "c.D"),
        ("items[0][0]._target_", "e.F"),
        ("args._target_", "g.H"),
        ("args._args_[0]._target_", "i.J"),
    ]


def test_find_targets_resolves_dictconfig_interpolations():
    cfg = OmegaConf.create({"evil": "os.system", "node": {"_target_": "${evil}"}})
    assert find_targets(cfg) == [("node._target_", "os.system")]
    with pytest.raises(DisallowedTargetError, match=r"node._target_ = 'os.system'"):
        check_targets(cfg)


DANGEROUS = {
    "write_text": lambda tmp: {
        "_target_": "pathlib.Path.write_text",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(tmp / "pwned")]}, "x"],
    },
    "os_system": lambda tmp: {"_target_": "os.system", "_args_": [f"touch {tmp / 'pwned'}"]},
    "eval": lambda tmp: {
        "_target_": "builtins.eval",
        "_args_": [f"__import__('pathlib').Path({str(tmp / 'pwned')!r}).write_text('x')"],
    },
    "subprocess": lambda tmp: {
        "_target_": "subprocess.run",
        "_args_": [["touch", str(tmp / "pwned")]],
    },
    "in_a_list": lambda tmp: {
        "model": {"_target_": "nerf_lab.models.NeuralRadianceField"},
        "callbacks": [{"x": 1}, {"_target_": "os.system", "_args_": [f"touch {tmp / 'pwned'}"]}],
    },
    "partial": lambda tmp: {
        "optimizer": {
            "optim": {"_target_": "subprocess.run", "_partial_": True, "args": ["true"]},
        },
        "later": {"_target_": "os.system", "_args_": [f"touch {tmp / 'pwned'}"]},
    },
    "via_module_attribute": lambda tmp: {
        "_target_": "nerf_lab.checkpoint.os.system",
        "_args_": [f"touch {tmp / 'pwned'}"],
    },
    "via_torch_optim_module": lambda tmp: {
        "_target_": "torch.optim.optimizer.torch.save",
        "_args_": [{"a": 1}, str(tmp / "pwned")],
    },
    "nerf_lab_file_writer": lambda tmp: {
        "_target_": "nerf_lab.trainer.write_json_atomic",
        "_args_": [str(tmp / "pwned"), {"a": 1}],
    },
}


@pytest.mark.parametrize("case", sorted(DANGEROUS))
def test_dangerous_targets_are_refused_before_any_call(case, tmp_path):
    cfg = DANGEROUS[case](tmp_path)
    with pytest.raises(DisallowedTargetError) as info:
        safe_instantiate(cfg)
    assert not (tmp_path / "pwned").exists()
    msg = str(info.value)
    assert "nothing was called" in msg and "allow_targets" in msg
    # every disallowed target is named with its key path
    bad = [(p, t) for p, t in find_targets(cfg) if target_problem(t) is not None]
    assert bad
    for path, target in bad:
        assert f"{path} = {target!r}" in msg
    assert len(info.value.problems) == len(bad)


def test_a_test_callable_is_not_called_unless_named_explicitly(tmp_path):
    CALLS.clear()
    cfg = {"_target_": f"{__name__}.record_call", "_args_": [1]}
    with pytest.raises(DisallowedTargetError, match=r"_target_ = 'tests.test_safety.record_call'"):
        safe_instantiate(cfg)
    assert CALLS == []
    # the user names it: allowed (exactly, or by a pattern)
    assert safe_instantiate(cfg, allow=[f"{__name__}.record_call"]) == "called"
    assert safe_instantiate(cfg, allow=["tests.test_safety.*"]) == "called"
    assert len(CALLS) == 2


def test_no_module_outside_the_allow_list_is_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_mod_for_test.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\ndef f():\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_mod_for_test", raising=False)
    # the name matches a pattern, but it would need an import of a module that does not
    for target in ("evil_mod_for_test.f", "torch.optim.evil_mod_for_test.f"):
        with pytest.raises(DisallowedTargetError):
            check_targets({"_target_": target})
    assert not marker.exists() and "evil_mod_for_test" not in sys.modules
    # allowed by the user: imported (and only then)
    check_targets({"_target_": "evil_mod_for_test.f"}, allow=["evil_mod_for_test.*"])
    assert marker.exists()


def test_module_importable_follows_the_pattern_path():
    allow = ["my_pkg.models.*", "other.Thing"]
    assert module_importable("my_pkg", allow)
    assert module_importable("my_pkg.models", allow)
    assert module_importable("my_pkg.models.deep", allow)
    assert not module_importable("my_pkg.other", allow)
    assert not module_importable("os", allow)
    assert module_importable("other", allow)
    assert not module_importable("other_pkg", allow)


def test_torch_optim_allows_optimiser_and_scheduler_classes_only():
    import torch

    assert resolve_target("torch.optim.Adam", DEFAULT_ALLOW) is torch.optim.Adam
    for ok in (
        "torch.optim.Adam",
        "torch.optim.SGD",
        "torch.optim.lr_scheduler.LambdaLR",
        "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "nerf_lab.schedulers.step_decay",
    ):
        assert target_problem(ok) is None, ok
    for bad, needle in (
        ("torch.optim.Optimizer.zero_grad", "not an optimiser or LR-scheduler class"),
        ("torch.optim.adam.torch.load", "defined outside the allow-list"),
        ("torch.load", "not in the allow-list"),
        ("torch.optim.NoSuchThing", "cannot be resolved"),
    ):
        assert needle in (target_problem(bad) or ""), bad


def test_non_string_and_malformed_targets_are_refused():
    assert "not a dotted name" in target_problem(42)
    assert "cannot be resolved" in target_problem("nerf_lab.${oc.env:X}")
    assert "cannot be resolved" in target_problem("nerf_lab..models")
    with pytest.raises(ValueError, match="allow_targets"):
        check_targets({}, allow=[""])


def _options() -> list[tuple[str, str]]:
    out = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if rel.parts[0] == "hydra" or len(rel.parts) == 1 or rel.parts[:2] == ("loss", "terms"):
            continue  # (loss/terms/* are added under a name: +loss/terms@loss.terms.x=...)
        out.append(("/".join(rel.parts[:-1]), path.stem))
    return out


def test_every_config_group_is_covered():
    groups = {g for g, _ in _options()}
    assert {"data", "model", "loss", "optimizer", "raysampler", "trainer", "experiment"} <= groups
    assert len(_options()) >= 15


@pytest.mark.parametrize(("group", "option"), _options())
def test_nerf_lab_configs_pass(group, option):
    # the file itself (without Hydra's own node: Hydra instantiates those, not nerf_lab)
    raw = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
    raw.pop("hydra", None)
    check_targets(raw)
    # and the composed config, as a run saves it
    prefix = "+" if group == "sweep" else ""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        try:
            cfg = compose(config_name="config", overrides=[f"{prefix}{group}={option}"])
        except MissingConfigException as e:  # an optional plugin (e.g. Optuna) is absent
            assert "hydra/" in str(e)
            return
    targets = find_targets(cfg)
    assert {"data._target_", "model._target_", "optimizer._target_", "scheduler._target_"} <= {
        p for p, _ in targets
    }
    check_targets(cfg)
    check_targets(OmegaConf.to_container(cfg, resolve=True))
