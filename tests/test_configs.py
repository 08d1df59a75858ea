"""Every config loads (mmengine Config.fromfile, no model build), is composed as mmseg composes configs, and
carries the intended values; the committed configs equal tools/gen_configs.py's output; tools/list_configs.py
(fsa_seg.zoo.config_index) filters them."""
import ast
import re
from pathlib import Path

import pytest
from mmengine import Config

from fsa_seg.benchmarks import BENCHMARKS, get_benchmark
from fsa_seg.zoo.config_index import COLUMNS, collect, config_temp_files_in_memory, matches, render
from fsa_seg.class_names import CLASS_NAME_DIR, load_class_names
from fsa_seg.plugin import FSASegmentor, SAM3Segmentor
from tooling import run_tool

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
NATIVE = ("vanilla", "maskclip", "sclip", "clearclip", "naclip")
VFMS = ("sam", "dino", "dinov2", "mae")
DATASETS = tuple(BENCHMARKS)
N_METHOD_CONFIGS = len(DATASETS) * (5 * 2 * 3 + 4 * 2 * 3) + 1  # native, proxyclip (4 proxies), alias
BACKBONES = {"vit-b16": ("ViT-B-16", "openai"), "vit-l14": ("ViT-L-14", "openai"),
             "vit-h14": ("ViT-H-14", "laion2b_s32b_b79k")}

# The released protocols, transcribed from each method's repository (configs/cfg_*.py + segmentor defaults).
FSA_RELEASE = dict(slide=(336, 112), logit=40.0, prob={"voc21": 0.2, "context60": 0.14, "coco_object": 0.3},
                   short={"cityscapes": 448, "ade20k": 448, "ade847": 448, "context459": 448}, short_default=336,
                   pamr=False, slide_by_dataset={"cityscapes": (224, 80)})
PUBLISHED = {
    "sclip": dict(slide=(224, 112), logit=40.0,
                  logit_by_dataset={"voc21": 65.0, "context60": 50.0, "coco_object": 50.0},
                  prob={"voc21": 0.1, "context60": 0.1, "coco_object": 0.1},
                  short={"coco_stuff164k": 448, "cityscapes": 560}, short_default=336, pamr=False,
                  names={"voc21": "sclip_voc21", "voc20": "sclip_voc20", "coco_object": "sclip_coco_object"}),
    "clearclip": dict(slide=(448, 224), logit=50.0, prob={"voc21": 0.5, "context60": 0.15, "coco_object": 0.4},
                      short={}, short_default=448, pamr=False, slide_by_dataset={"cityscapes": (224, 224)},
                      names={"voc21": "clearclip_voc21", "coco_object": "clearclip_coco_object"}),
    "naclip": dict(slide=(224, 112), logit=40.0, prob={"voc21": 0.1, "context60": 0.1, "coco_object": 0.1},
                   short={"cityscapes": 560}, short_default=336, pamr=True,
                   slide_by_dataset={"voc21": (0, 112), "voc20": (0, 112)},
                   names={"voc21": "naclip_voc21", "voc20": "naclip_voc20", "coco_object": "naclip_coco_object"}),
    "proxyclip": dict(slide=(336, 112), logit=40.0, prob={"voc21": 0.2, "context60": 0.15, "coco_object": 0.25},
                      short={"cityscapes": 448, "ade20k": 448, "ade847": 448, "context459": 448},
                      short_default=336, pamr=False, slide_by_dataset={"cityscapes": (224, 112)}),
    "vanilla": FSA_RELEASE,
    "maskclip": FSA_RELEASE,
    "fsa_proxyclip": FSA_RELEASE,
}

NATIVE_NAME = re.compile(r"^(?P<fsa>fsa_)?(?P<method>[a-z]+)_(?P<backbone>vit-[blh]\d+)_(?P<dataset>[a-z0-9_]+)$")
PROXY_NAME = re.compile(r"^(?P<fsa>fsa_)?proxy_(?P<vfm>[a-z0-9]+)_(?P<backbone>vit-[blh]\d+)_(?P<dataset>[a-z0-9_]+)$")
TOP_PROXY_NAME = re.compile(r"^fsa_proxy_(?P<vfm>[a-z0-9]+)_(?P<dataset>[a-z0-9_]+)$")


@pytest.fixture(scope="module")
def all_configs():
    """Every config under configs/ except the _base_ files, loaded (RAM-backed temp files when possible)."""
    with config_temp_files_in_memory():
        paths = sorted(p for p in CONFIGS.rglob("*.py") if "_base_" not in p.relative_to(CONFIGS).parts)
        return {p.relative_to(CONFIGS).as_posix(): Config.fromfile(str(p), import_custom_modules=False)
                for p in paths}


def expected_identity(rel):
    """(method, fsa, backbone tag, vfm, dataset) from the documented naming scheme, or None."""
    stem = Path(rel).stem
    if rel == "fsa_proxy_sam_voc.py":
        return "proxyclip", True, "vit-b16", "sam", "voc21"
    folder = Path(rel).parent.as_posix()
    if folder == "." and (m := TOP_PROXY_NAME.match(stem)) and m["vfm"] in VFMS:
        return "proxyclip", True, "vit-b16", m["vfm"], m["dataset"]
    if folder == "proxyclip" and (m := PROXY_NAME.match(stem)):
        return "proxyclip", bool(m["fsa"]), m["backbone"], m["vfm"], m["dataset"]
    if folder in NATIVE and (m := NATIVE_NAME.match(stem)) and m["method"] == folder:
        return folder, bool(m["fsa"]), m["backbone"], None, m["dataset"]
    return None


def test_committed_configs_equal_the_generator_output():
    done = run_tool("gen_configs", "--check")
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout.strip().endswith(" 0 out of date")


def _bases(path: Path) -> list:
    """The ``_base_`` list of a config file, read from its source."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_base_":
            return [Path(b).name if "/datasets/" not in b else "datasets/" + Path(b).name
                    for b in ast.literal_eval(node.value)]
    return []


def test_configs_compose_model_dataset_protocol_and_runtime():
    """As mmseg's: a leaf lists its model, dataset, protocol and runtime bases; dataset bases hold no model;
    no config deletes what a base set."""
    for path in sorted((CONFIGS / "_base_" / "datasets").glob("*.py")):
        cfg = Config.fromfile(str(path), import_custom_modules=False)
        assert "model" not in cfg and "test_dataloader" in cfg and "test_evaluator" in cfg, path.name
    leaves = [p for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts]
    for path in leaves:
        text = path.read_text()
        assert "_delete_" not in text, path
        bases = _bases(path)
        if len(bases) == 1:  # a variant of another leaf (alias, ablation)
            assert (path.parent / bases[0]).is_file() or (CONFIGS / bases[0]).is_file(), path
            continue
        assert len(bases) == 4, (path, bases)
        model, dataset, protocol, runtime = bases
        assert model in ("fsa_segmentor.py", "sam3.py") and runtime == "default_runtime.py", path
        name = dataset.split("/")[1][:-3]
        assert name in BENCHMARKS and protocol.endswith(f"_{name}.py"), path


def test_every_config_loads(all_configs):
    assert len(all_configs) >= N_METHOD_CONFIGS
    for rel, cfg in all_configs.items():
        assert "model" in cfg and "type" in cfg.model, rel
        assert cfg.test_dataloader.dataset.type, rel


def test_the_method_configs_cover_every_combination(all_configs):
    found = {expected_identity(rel) for rel in all_configs} - {None}
    expected = {(m, f, b, None, d) for m in NATIVE for f in (True, False) for b in BACKBONES for d in DATASETS}
    expected |= {("proxyclip", f, b, v, d) for v in VFMS for f in (True, False) for b in BACKBONES for d in DATASETS}
    assert found == expected
    clip_configs = [rel for rel, cfg in all_configs.items() if cfg.model.type == "FSASegmentor"]
    assert all(expected_identity(rel) is not None for rel in clip_configs), \
        [rel for rel in clip_configs if expected_identity(rel) is None]
    assert len(clip_configs) == len(expected) + 1  # + the fsa_proxy_sam_voc.py alias


def _resize_short_side(cfg):
    steps = [s for s in cfg.test_dataloader.dataset.pipeline if s["type"] == "Resize"]
    assert len(steps) == 1 and steps[0]["scale"][0] == 2048 and steps[0]["keep_ratio"]
    return steps[0]["scale"][1]


def test_key_values_of_every_method_config(all_configs):
    accepted = FSASegmentor.option_names()
    checked = 0
    for rel, cfg in all_configs.items():
        identity = expected_identity(rel)
        if identity is None:
            continue
        method, fsa, tag, vfm, dataset = identity
        model, spec = cfg.model, get_benchmark(dataset)
        assert set(model) - {"type"} <= accepted, (rel, set(model) - accepted)     # no misspelt keys
        assert model.base_method == method and model.fsa is fsa, rel
        assert (model.clip_model, model.clip_pretrained) == BACKBONES[tag], rel
        assert model.vfm == vfm, rel
        assert model.lamda == (4.5 if vfm == "mae" else 2.3 if tag == "vit-h14" else 3.0), rel
        assert model.top_p == 0.45 and model.beta == 1.2 and model.gamma == 3.0, rel
        assert cfg.test_dataloader.dataset.type == spec.dataset_type, rel
        proto = PUBLISHED["fsa_proxyclip" if (method == "proxyclip" and fsa) else method]
        assert model.name_path == proto.get("names", {}).get(dataset, spec.class_names), rel
        slide = proto.get("slide_by_dataset", {}).get(dataset, proto["slide"])
        assert (model.slide_crop, model.slide_stride) == slide, rel
        assert model.logit_scale == proto.get("logit_by_dataset", {}).get(dataset, proto["logit"]), rel
        assert model.prob_thd == proto["prob"].get(dataset, 0.0), rel
        assert _resize_short_side(cfg) == proto["short"].get(dataset, proto["short_default"]), rel
        assert model.pamr is proto["pamr"], rel
        if model.pamr:
            assert model.pamr_steps == 10 and tuple(model.pamr_dilations) == (8, 16), rel
        assert model.random_weights is False and model.base_method_cfg == {}, rel
        checked += 1
    assert checked == N_METHOD_CONFIGS


def test_alias_and_switching_keys(all_configs):
    assert all_configs["fsa_proxy_sam_voc.py"].model == all_configs["fsa_proxy_sam_voc21.py"].model
    cfg = Config.fromfile(str(CONFIGS / "fsa_proxy_sam_voc.py"), import_custom_modules=False)
    cfg.merge_from_dict({"model.base_method": "sclip", "model.fsa": False, "model.base_method_cfg.residual": False})
    assert cfg.model.base_method == "sclip" and cfg.model.base_method_cfg == {"residual": False}


def select(rows, **wanted):
    return [r for r in rows if all(matches(r, k, v) for k, v in wanted.items())]


@pytest.mark.slow
def test_list_configs_filters():
    rows = collect()
    assert len(rows) >= N_METHOD_CONFIGS and all(set(r) == set(COLUMNS) for r in rows)
    paths = [r["path"] for r in select(rows, method=["sclip"], fsa=["on"], backbone=["vit-b16"])]
    assert paths == sorted(f"configs/sclip/fsa_sclip_vit-b16_{d}.py" for d in DATASETS)
    chosen = select(rows, method=["proxyclip"], vfm=["mae"], backbone=["ViT-H-14"], dataset=["ade20k"])
    lines = render(chosen, csv=True).splitlines()
    assert lines[0] == "method,fsa,backbone,vfm,dataset,path"
    assert sorted(lines[1:]) == [
        "proxyclip,off,ViT-H-14,mae,ade20k,configs/proxyclip/proxy_mae_vit-h14_ade20k.py",
        "proxyclip,on,ViT-H-14,mae,ade20k,configs/proxyclip/fsa_proxy_mae_vit-h14_ade20k.py"]
    sam3 = select(rows, method=["sam3"], dataset=["voc20"])
    assert sorted((r["fsa"], r["path"]) for r in sam3) == [("off", "configs/sam3_voc20.py"),
                                                           ("on", "configs/fsa_sam3_voc20.py")]


@pytest.mark.slow
def test_list_configs_command_line():
    done = run_tool("list_configs", "--method", "naclip", "--fsa", "off", "--backbone", "ViT-L-14", "--dataset",
                    "voc20", "cityscapes", "--paths")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["configs/naclip/naclip_vit-l14_cityscapes.py",
                                   "configs/naclip/naclip_vit-l14_voc20.py"]


def test_each_method_names_its_own_class_files(all_configs):
    """SCLIP, NACLIP and ClearCLIP (with and without FSA, every backbone) use their released class files where
    those differ from FSA's; every other method and benchmark uses FSA's. Every name resolves to a packaged file
    with the benchmark's number of classes."""
    own = {(m, d): n for m in ("sclip", "naclip", "clearclip") for d, n in PUBLISHED[m]["names"].items()}
    assert sorted(own.values()) == sorted(["sclip_voc21", "sclip_voc20", "sclip_coco_object", "naclip_voc21",
                                           "naclip_voc20", "naclip_coco_object", "clearclip_voc21",
                                           "clearclip_coco_object"])
    seen = {}
    for rel, cfg in all_configs.items():
        identity = expected_identity(rel)
        if identity is None:
            continue
        method, _, _, _, dataset = identity
        expected = own.get((method, dataset), BENCHMARKS[dataset].class_names)
        assert cfg.model.name_path == expected, rel
        seen[expected] = dataset
    for name, dataset in seen.items():
        _, idx = load_class_names(name)
        assert max(idx) + 1 == BENCHMARKS[dataset].num_classes, name
    assert set(own.values()) <= set(seen)


@pytest.mark.slow
def test_ade847_and_context459_configs(all_configs):
    """Every method has configs on the two large-vocabulary benchmarks; FSA-ProxyCLIP's follow the released
    cfg_ade847.py / cfg_context459.py; list_configs names them by benchmark."""
    for dataset, loader in (("ade847", "LoadUInt16Annotations"), ("context459", "LoadUInt16Annotations")):
        cfg = all_configs[f"fsa_proxy_dino_{dataset}.py"]
        assert cfg.model.name_path == dataset and cfg.model.prob_thd == 0.0 and cfg.model.vfm == "dino"
        assert (cfg.model.slide_crop, cfg.model.slide_stride) == (336, 112) and _resize_short_side(cfg) == 448
        assert [s["type"] for s in cfg.test_dataloader.dataset.pipeline][2] == loader
        assert cfg.test_evaluator.ignore_index == 65535
        for method in NATIVE:
            for prefix in ("", "fsa_"):
                assert f"{method}/{prefix}{method}_vit-l14_{dataset}.py" in all_configs
        for prefix in ("", "fsa_"):
            assert f"{prefix}sam3_{dataset}.py" in all_configs
    rows = select(collect(), dataset=["ade847", "context459"], method=["sam3"])
    assert sorted(r["path"] for r in rows) == ["configs/fsa_sam3_ade847.py", "configs/fsa_sam3_context459.py",
                                               "configs/sam3_ade847.py", "configs/sam3_context459.py"]


# SAM3's protocol: our SAM3 class files where they exist, the untuned per-benchmark background threshold.
SAM3_BACKGROUND = {"voc21": 0.5, "context60": 0.5, "coco_object": 0.5}


def test_sam3_configs(all_configs):
    accepted = SAM3Segmentor.option_names()
    sam3 = {rel: cfg for rel, cfg in all_configs.items() if cfg.model.type == "SAM3Segmentor"}
    assert len(sam3) >= 2 * len(DATASETS)
    for rel, cfg in sam3.items():
        assert set(cfg.model) <= accepted, (rel, set(cfg.model) - accepted)     # ablations too: no misspelt keys
        assert cfg.model.random_weights is False and _resize_short_side(cfg) == 1008, rel
    for dataset in DATASETS:
        spec = get_benchmark(dataset)
        own = f"sam3_{spec.class_names}"
        names = own if (CLASS_NAME_DIR / f"{own}.txt").is_file() else spec.class_names
        for fsa in (False, True):
            model = sam3[f"{'fsa_' if fsa else ''}sam3_{dataset}.py"].model
            assert model.fsa is fsa and model.name_path == names, (dataset, fsa)
            assert model.prob_thd == SAM3_BACKGROUND.get(dataset, 0.0), dataset
            assert (model.instance_thd, model.top_k, model.slide_crop) == (0.5, 0, 0), dataset
            assert (model.score_source, model.both_reduce, model.fsa_placement) == ("both", "max", "encoder_output")
        assert max(load_class_names(names)[1]) + 1 == spec.num_classes, dataset
    assert sam3["sam3_voc21.py"].model.name_path == "sam3_voc21"
    assert sam3["sam3_ade847.py"].model.name_path == "sam3_ade847"
    assert sam3["fsa_sam3_context459.py"].model.name_path == "sam3_context459"
    assert sam3["fsa_sam3_voc21_last_2.py"].model.fsa_layers == 2


def test_sam3_isolation_and_strategy_ablations(all_configs):
    # the default isolation is FSA's (uniform attention, released 35:20 ratio); each ablation changes one thing
    default = all_configs["fsa_sam3_voc21.py"].model
    assert (default.isolation, default.feedback_scale, default.isolation_scale) == ("uniform", 1.0, 1.75)
    assert default.fsa_strategies == "both"
    expected = {"fsa_sam3_voc21_mean_isolation.py": dict(isolation="mean", isolation_scale=1.0),
                "fsa_sam3_voc21_uniform_isolation.py": dict(isolation="uniform", isolation_scale=1.0),
                "fsa_sam3_voc21_no_isolation.py": dict(isolation="none"),
                "fsa_sam3_voc21_three_strategies.py": dict(fsa_strategies="ensemble_results"),
                "fsa_sam3_voc21_three_strategy_maps.py": dict(fsa_strategies="ensemble")}
    for rel, keys in expected.items():
        model = all_configs[rel].model
        changed = {k for k in default if default[k] != model.get(k)}
        assert changed and changed <= set(keys) and all(model[k] == v for k, v in keys.items()), (rel, changed)
