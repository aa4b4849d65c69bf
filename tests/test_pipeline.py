"""The whole pipeline under real `dvc repro`, on the tiny params profile, in a scratch repo.

The session's tiny build (helpers.pipeline) is the pipeline under test: tests that read
use it as it is (``built``); tests that change params or code, or run anything that
could write, work on a private copy (``pipeline_copy``, ``tracked_copy``). What a change
reruns is read from `dvc status` and `dvc dag` (helpers.pipeline.rerun_scope) where
running it would add nothing; `test_attack_knob_reruns_only_that_form` runs one change
for real and checks that DVC ran exactly that scope.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import run, write_params
from helpers.pipeline import TinyBuild, ran, rerun_scope, stale
from helpers.report import missing_numbers
from helpers.runs import stage_runs
from helpers.study import FORMS, MODELS, NATURAL
from mnistlab.report import load_metrics

if TYPE_CHECKING:  # imported at run time as the plugin below, never before (pytest's rewrite)
    from helpers.browser import Chromium, MlflowUI

# the session fixtures `chromium` and `mlflow_ui`, shared with test_tracking_pipeline
pytest_plugins = ["helpers.browser"]

pytestmark = pytest.mark.slow

SHARED = {"transfer", "compare", "report"}  # they read every model's outputs


def model_stages(model: str) -> set[str]:
    """The stages downstream of ``train@<model>`` that belong to that model alone."""
    return {f"{kind}@{model}" for kind in ("train", "evaluate", "visualize", "attribution")} | {
        f"attack@{form}-{model}" for form in FORMS
    }


@pytest.fixture
def built(tiny_build: TinyBuild) -> Path:
    """The session's tiny build, after one full `dvc repro`: read only."""
    return tiny_build.repo


def test_full_repro_runs_every_stage_once(built: Path, tiny_build: TinyBuild) -> None:
    stages = set(run(["dvc", "stage", "list", "--name-only"], cwd=built).stdout.split())
    executed = tiny_build.ran
    # `architecture@*` reads no params and its outputs are committed with dvc.lock, so in
    # a fresh clone it is already up to date; everything else depends on the tiny profile.
    assert stages - executed <= {s for s in stages if s.startswith("architecture@")}
    assert len(stages) == 1 + 1 + 3 * 5 + 6 * 3 + 3  # validate, download, 5 per model,
    # 6 attack forms per model, transfer + compare + report
    runs = stage_runs(built)
    names = sorted(r.info.run_name for r in runs)
    # one MLflow run per executed stage (validate_params logs none: it only checks)
    assert names == sorted(executed - {"validate_params"})
    assert all(r.info.status == "FINISHED" for r in runs)


def test_outputs_and_metrics(built: Path) -> None:
    for model in MODELS:
        train = json.loads((built / f"metrics/train/{model}.json").read_text())
        assert train["n_train"] == 2000 and len(train["seconds_per_epoch"]) == 1
        ev = json.loads((built / f"metrics/evaluate/{model}.json").read_text())
        assert ev["n_test"] == 1000
        assert 0.5 < ev["test_accuracy"] <= 1.0  # 2000 images, 1 epoch: well above chance
        assert len(ev["per_class_accuracy"]) == 10 and len(ev["samples"]) == 6
        for png in ("loss_curves", "val_accuracy"):
            assert (built / f"plots/train/{model}/{png}.png").stat().st_size > 5000
        for png in ("confusion", "samples", "misclassified"):
            assert (built / f"plots/evaluate/{model}/{png}.png").stat().st_size > 5000
        arch = json.loads((built / f"metrics/architecture/{model}.json").read_text())
        assert arch["total_neurons"] == 574
        assert (built / f"models/{model}.pt").is_file()
        confusion = (built / f"plots/evaluate/{model}.csv").read_text().splitlines()
        assert confusion[0] == "actual,predicted" and len(confusion) == 1001


def test_registered_models_classify_like_evaluate(built: Path) -> None:
    import mlflow
    import numpy as np

    from mnistlab.core import mnist as data

    images, labels = data.load_mnist(built / "data/MNIST/raw", "test")
    x = images[:1000].unsqueeze(1).float().numpy() / 255.0
    for model in MODELS:
        mlflow.set_tracking_uri(f"sqlite:///{built}/mlflow.db")
        pyfunc = mlflow.pyfunc.load_model(f"models:/mnist-{model}/latest")
        preds = np.asarray(pyfunc.predict(x.astype(np.float32))).argmax(1)
        acc = float((preds == labels[:1000].numpy()).mean())
        ev = json.loads((built / f"metrics/evaluate/{model}.json").read_text())
        assert acc == pytest.approx(ev["test_accuracy"], abs=1e-9)


def test_second_repro_runs_nothing(tracked_copy: Path) -> None:
    repo = tracked_copy
    n_runs = len(stage_runs(repo))
    assert n_runs >= 30
    out = run(["dvc", "repro"], cwd=repo)
    assert ran(out.stdout) == set()
    assert len(stage_runs(repo)) == n_runs


def test_model_override_reruns_only_that_model(pipeline_copy: Path) -> None:
    repo = pipeline_copy
    write_params(repo, {"models": {"cnn_bn": {"lr": 0.003}}})
    status = run(["dvc", "status"], cwd=repo).stdout
    assert "train@cnn_bn" in status and "train@cnn:" not in status
    diff = run(["dvc", "params", "diff"], cwd=repo).stdout
    assert "models.cnn_bn.lr" in diff
    # Everything downstream of train@cnn_bn reruns with a new model, so running it would
    # add nothing to the scope: cnn_bn's stages and the three that read every model (they
    # declare `models`, whose names, order and labels they take, so they are stale at
    # once). (evaluate@cnn is out of scope, so its metrics stay as they are.)
    assert stale(repo) == {"validate_params", "train@cnn_bn", *SHARED}
    assert rerun_scope(repo) == {"validate_params", *model_stages("cnn_bn"), *SHARED}


@pytest.mark.xdist_group("browser")  # the worker that holds the session's `mlflow ui`
def test_mlflow_rest_api_over_http(tiny_build: TinyBuild, mlflow_ui: MlflowUI) -> None:
    """MLflow's REST API over the build's store, served by `mlflow ui` (what `make ui`
    runs): the experiment, every stage run with its params and metrics, the registry."""
    import json as _json
    import urllib.request

    server = mlflow_ui.url

    req = urllib.request.Request(
        f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=mnistlab"
    )
    exp_id = _json.load(urllib.request.urlopen(req))["experiment"]["experiment_id"]
    body = _json.dumps({"experiment_ids": [exp_id], "max_results": 1000}).encode()
    req = urllib.request.Request(
        f"{server}/api/2.0/mlflow/runs/search",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    runs = _json.load(urllib.request.urlopen(req))["runs"]
    by_name = {}
    for r in runs:
        tags = {t["key"]: t["value"] for t in r["data"].get("tags", [])}
        by_name.setdefault(tags["mlflow.runName"], []).append(r)
    executed = tiny_build.ran
    assert executed - {"validate_params"} <= set(by_name)
    (train,) = by_name["train@cnn_bn"]  # one run per executed stage, never two
    params = {p["key"]: p["value"] for p in train["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in train["data"]["metrics"]}
    assert params["train.epochs"] == "1" and "val_accuracy" in metrics
    models = _json.load(
        urllib.request.urlopen(f"{server}/api/2.0/mlflow/registered-models/search")
    )["registered_models"]
    assert {"mnist-cnn", "mnist-cnn_bn"} <= {m["name"] for m in models}


@pytest.mark.xdist_group("browser")  # the worker that holds the session's Chromium
def test_report_renders_in_headless_chromium(
    built: Path, chromium: Chromium, tmp_path: Path
) -> None:
    page_path = built / "report" / "index.html"
    html = page_path.read_text()
    for needle in ("Part 1", "Part 2", "Part 3"):
        assert needle in html, needle
    # this build's numbers, as the report formats them, each in its own model's row
    assert missing_numbers(html, load_metrics(built / "metrics")) == []
    errors: list[str] = []
    with chromium.page(viewport={"width": 1200, "height": 900}) as page:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(
            "[...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert errors == []
    assert len(images) >= 30
    assert [alt for alt, ok in images if not ok] == []
    assert "missing figure" not in html
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_dvc_plots_show_renders_every_plot(pipeline_copy: Path) -> None:
    import json as _json

    out = run(["dvc", "plots", "show", "--json"], cwd=pipeline_copy)
    plots = _json.loads(out.stdout)
    assert "errors" not in plots or not plots["errors"], plots.get("errors")
    rendered = plots.get("data", plots)
    names = set(rendered)
    # dvc.yaml's `plots:` names folders: every model's and form's series join by themselves
    expected = {f"plots/{kind}/{m}.csv" for kind in ("train", "evaluate") for m in MODELS}
    expected |= {f"plots/attack/{f}-{m}.csv" for f in FORMS for m in MODELS}
    expected |= {f"plots/attribution/{m}{s}.csv" for m in MODELS for s in ("", "-sanity")}
    assert expected <= names, expected - names
    assert not [n for n in names if n.startswith("dvc.yaml::")]  # each series once
    training = _json.dumps(rendered[f"plots/train/{MODELS[0]}.csv"])
    assert '"field": "train_loss"' in training and '"field": "val_accuracy"' in training
    assert '"predicted"' in _json.dumps(rendered[f"plots/evaluate/{MODELS[0]}.csv"])
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) >= 30
    for name, entries in rendered.items():
        assert entries, f"plot {name} rendered nothing"


def test_attack_knob_reruns_only_that_form(pipeline_copy: Path) -> None:
    """A params change run for real: DVC runs exactly the scope read from `dvc status`
    and `dvc dag` (helpers.pipeline.rerun_scope), which the other scope tests rely on."""
    built = pipeline_copy
    write_params(built, {"attacks": {"targeted": {"beta": 0.7}}})
    status = run(["dvc", "status"], cwd=built).stdout
    changed = {
        line.rstrip(":").strip()
        for line in status.splitlines()
        if line and not line.startswith((" ", "\t"))
    }
    assert {f"attack@targeted-{m}" for m in MODELS} | {"validate_params"} <= changed
    assert not {c for c in changed if c.startswith("attack@") and "targeted" not in c}
    assert "attacks.targeted.beta" in run(["dvc", "params", "diff"], cwd=built).stdout
    # compare sets every form's numbers side by side, so it reads targeted's metrics too
    expected = {"validate_params", *(f"attack@targeted-{m}" for m in MODELS), *SHARED}
    assert rerun_scope(built) == expected
    executed = ran(run(["dvc", "repro"], cwd=built).stdout)
    assert executed == expected


def test_visualisation_code_edit_reruns_only_visualize(pipeline_copy: Path) -> None:
    built = pipeline_copy
    module = built / "src" / "mnistlab" / "visualize" / "figures.py"
    module.write_text(module.read_text() + "\n# a harmless edit\n")
    # attribution declares the visualize package too (it reuses its occlusion). What
    # `dvc status` lists is what reruns for sure; compare and report read their arrays
    # and rerun only if those come out different (running adds nothing to the claim).
    assert stale(built) == {
        *(f"visualize@{m}" for m in MODELS),
        *(f"attribution@{m}" for m in MODELS),
    }


def test_remote_round_trip(pipeline_copy: Path) -> None:
    """`dvc push` to the default local remote, wipe cache and outputs, `dvc pull`: clean."""
    import shutil

    built = pipeline_copy
    run(["dvc", "push"], cwd=built)
    assert any((built / ".dvc-remote").rglob("*"))
    shutil.rmtree(built / ".dvc" / "cache")
    for out in ("data", "models", "report", "plots/train/cnn", "plots/attack/pgd-cnn"):
        shutil.rmtree(built / out)
    (built / "artifacts/visualize/cnn.npz").unlink()
    assert "deleted" in run(["dvc", "status"], cwd=built).stdout
    run(["dvc", "pull"], cwd=built)
    assert "up to date" in run(["dvc", "status"], cwd=built).stdout
    assert (built / "models" / "cnn.pt").is_file()
    assert (built / "report" / "index.html").is_file()


def test_every_figure_directory_matches_the_registry(built: Path) -> None:
    """What each stage draws is exactly what the figure registry (and the report) expects."""
    from mnistlab.report.registry import figure_kind, registry_mismatch

    dirs = sorted({p.parent for p in (built / "plots").rglob("*.png")})
    kinds = {figure_kind(d) for d in dirs}
    assert {"train", "attribution", "attack/strong", "compare", "transfer"} <= kinds
    for d in dirs:
        missing, unexpected = registry_mismatch(figure_kind(d), [p.stem for p in d.glob("*.png")])
        assert not missing and not unexpected, (d, missing, unexpected)


def test_robust_model_metrics(built: Path) -> None:
    train = json.loads((built / "metrics/train/cnn_adv.json").read_text())
    assert 0 <= train["val_robust_accuracy"] <= 1 and train["best_epoch"] == 1
    rows = (built / "plots/train/cnn_adv.csv").read_text().splitlines()
    assert rows[0].endswith("val_robust_accuracy")
    for model in MODELS:
        strong = json.loads((built / f"metrics/attack/strong-{model}.json").read_text())
        ra = strong["robust_accuracy"]
        for eps in ("0.1", "0.3"):
            # the ensemble includes PGD, so it can only be stronger (lower accuracy)
            assert ra["strong"][eps] <= ra["apgd_ce"][eps] <= ra["pgd"][eps]
            assert ra["gap"][eps] == pytest.approx(ra["pgd"][eps] - ra["strong"][eps])
        assert strong["min_eps"]["n_images"] == 10
    transfer = json.loads((built / "metrics/transfer.json").read_text())
    assert set(transfer["success"]) == {
        "class_model",
        "targeted",
        "noise",
        "pgd",
        "class_model_seeded",
    }
    judges = transfer["class_image_judges"]
    assert set(judges) == {"seeded", "from_noise"}
    for image_set, per_model in judges.items():
        assert list(per_model) == list(MODELS)
        for row in per_model.values():
            assert {"knn_accuracy", "nearest_l2", "cross_model"} <= set(row), image_set
    assert all(len(row) == len(MODELS) for row in transfer["success"]["class_model"].values())
    attribution = json.loads((built / "metrics/attribution/cnn.json").read_text())
    methods = {
        "saliency",
        "smoothgrad",
        "integrated_gradients",
        "ig_blur",
        "ig_noise",
        "ig_mean",
        "grad_cam",
        "occlusion",
    }
    assert set(attribution["deletion_auc"]) == {"black", "blur"}
    for fill in ("black", "blur"):
        assert set(attribution["deletion_auc"][fill]) == methods | {"random"}
        assert set(attribution["ranking"][fill]) == methods
    assert set(attribution["sanity_passes"]) == methods
    trusted = attribution["trusted_method"]
    assert trusted is None or attribution["sanity_passes"][trusted]


def _edit(repo: Path, rel: str) -> None:
    path = repo / rel
    path.write_text(path.read_text() + "\n# a harmless edit\n")


def test_download_source_edit_reruns_only_download(pipeline_copy: Path) -> None:
    _edit(pipeline_copy, "src/mnistlab/download/__init__.py")
    assert stale(pipeline_copy) == {"download"}
    # run for real: the data come out byte-identical, so nothing downstream reruns
    assert ran(run(["dvc", "repro"], cwd=pipeline_copy).stdout) == {"download"}


def test_robust_model_override_reruns_only_its_stages(pipeline_copy: Path) -> None:
    built = pipeline_copy
    write_params(built, {"models": {"cnn_adv": {"adversarial": {"step_ratio": 0.6}}}})
    # a new robust model: everything downstream of train@cnn_adv reruns (see
    # test_model_override_reruns_only_that_model), and nothing of the other two models
    assert stale(built) == {"validate_params", "train@cnn_adv", *SHARED}
    assert rerun_scope(built) == {"validate_params", *model_stages("cnn_adv"), *SHARED}


def test_attribution_reruns_on_its_params_only(pipeline_copy: Path) -> None:
    built = pipeline_copy
    write_params(built, {"attacks": {"fgsm": {"eps": [0.0, 0.2]}}})
    assert stale(built) == {"validate_params", *(f"attack@fgsm-{m}" for m in MODELS)}
    run(["git", "checkout", "--", "params.yaml"], cwd=built)
    write_params(built, {"attribution": {"ig_steps": 4}})
    assert stale(built) == {"validate_params", *(f"attribution@{m}" for m in MODELS)}
    # compare reads the attribution arrays, report every metric and plot
    assert rerun_scope(built) == {
        "validate_params",
        *(f"attribution@{m}" for m in MODELS),
        "compare",
        "report",
    }


@pytest.mark.parametrize("model", NATURAL)
def test_apgd_matches_an_independent_library(built: Path, model: str) -> None:
    """Our APGD-CE against the Adversarial Robustness Toolbox's (same algorithm, its own
    code) on the pipeline's models: within a point; the full ensemble never weaker."""
    import numpy as np
    import torch
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from mnistlab.attacks.strong.apgd import apgd, strong_attack
    from mnistlab.core import mnist as data
    from mnistlab.core.models import load_checkpoint
    from mnistlab.core.tensors import predict, to_pixels

    net, _ = load_checkpoint(built / f"models/{model}.pt", expected=model)
    images, labels = data.load_mnist(built / "data/MNIST/raw", "test")
    x, y, eps = to_pixels(images[:200]), labels[:200], 0.1
    gen = torch.Generator().manual_seed(0)
    ours_ce = int((predict(net, apgd(net, x, y, eps=eps, n_iter=50, generator=gen)) == y).sum())
    ours = strong_attack(net, x, y, eps=eps, n_iter=50, generator=gen).robust_accuracy
    clf = PyTorchClassifier(
        model=net,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    art = AutoProjectedGradientDescent(
        clf,
        norm=np.inf,
        eps=eps,
        eps_step=2 * eps,
        max_iter=50,
        nb_random_init=1,
        batch_size=200,
        loss_type="cross_entropy",
        verbose=False,
    )
    np.random.seed(0)  # ART draws its random start from numpy's global generator
    x_art = art.generate(x.numpy(), y=y.numpy())
    theirs = int((clf.predict(x_art).argmax(1) == y.numpy()).sum())
    # within a point: 2 of the 200 images (counts, so float32 rounding cannot tip it)
    assert abs(ours_ce - theirs) <= len(y) // 100, (ours_ce, theirs)
    assert ours * len(y) <= theirs + 1e-6, (ours, theirs)
