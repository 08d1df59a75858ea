"""Extending (docs): a base method, a proxy model and a benchmark, each registered from one module outside the
package (+ the benchmark's class-name file), are first-class: generated configs (``tools/gen_configs.py
--import``), ``tools/list_configs.py`` (through the configs' ``custom_imports``), ``tools/check_data.py
--import``, the reproduce table's titles, and a generated config evaluated by the Runner, which imports the
module itself (``custom_imports``). Test-only entries stay out of listings and messages."""
import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsa_seg.benchmarks import BENCHMARKS, check_benchmarks, get_benchmark, list_benchmarks
from fsa_seg.diagnostics import data_check
from fsa_seg.last_block import LAST_BLOCKS, list_base_methods
from fsa_seg.resources import CONFIG_DIR
from fsa_seg.vfm import VFM_REGISTRY, build_vfm, get_vfm, list_vfms
from fsa_seg.zoo import config_index, generate
from fsa_seg.zoo.experiments import method_title
from fsa_seg.zoo.extensions import import_extensions
from fsa_seg.zoo.protocols import PROTOCOLS

REPO = Path(__file__).resolve().parents[1]
SHARED_VOC = REPO.parent / "shared" / "data" / "voc_mini"
MODULE = "toy_ext"

# The outside module, as a user writes it: one file registering a base method (with its own protocol), a proxy
# model and a benchmark (with its dataset class); the benchmark's class-name file sits beside it.
TOY_MODULE = '''
"""Toy extensions of fsa-seg."""
from pathlib import Path

import torch
import torch.nn.functional as F
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from fsa_seg.benchmarks import Benchmark, register_benchmark
from fsa_seg.last_block import CLIPNativeBlock, qkv, register_last_block
from fsa_seg.vfm import ProxyFeatures, register_vfm
from fsa_seg.zoo.protocols import Protocol

HERE = Path(__file__).resolve().parent


@register_last_block
class UniformBlock(CLIPNativeBlock):
    """Every token attends to all tokens equally (mean pooling); no residual, no FFN."""

    name = "toy_uniform"
    title = "Toy Uniform"
    protocol = Protocol("toy_uniform", "Toy Uniform", "the toy method's own settings",
                        dict(slide_crop=32, slide_stride=16, logit_scale=40.0, prob_thd=0.0),
                        {{"toy": dict(prob_thd=0.25)}}, default_short_side=64)
    residual = False
    ffn = False

    def mix(self, block, x, grid):
        _, _, v = qkv(block, x)
        n = v.shape[2]
        return torch.full((v.shape[0], n, n), 1.0 / n, dtype=v.dtype, device=v.device), v


class ColourPatches(ProxyFeatures):
    """Each 8 x 8 patch's mean colour is its feature."""

    patch_multiple = 8

    def forward(self, img):
        return F.avg_pool2d(img, 8)


def build_colour_patches(checkpoint=None, random_weights=False, crop_size=336):
    return ColourPatches()


register_vfm("toy-colour", build_colour_patches, title="Colour", patch=8, channels=3, lamda=2.7)


@DATASETS.register_module(force=True)  # force: the tests import this module more than once
class ToyDataset(BaseSegDataset):
    METAINFO = dict(classes=("background", "cat", "dog"))

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".png", **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


register_benchmark(Benchmark(
    name="toy", title="Toy (3 classes)", column="Toy", aliases=("toys",), dataset_type="ToyDataset",
    class_names=str(HERE / "toy_classes.txt"), data_root="{data_root}", img_dir="images", mask_dir="masks",
    img_suffix=".jpg", mask_suffix=".png", ann_file=None, num_classes=3, background=True,
    reduce_zero_label=False, expected_images=2, short_side=64, converter="(made by the test)",
    paper_table=False, description="Toy val (2 images), background + 2 classes.",
    protocol_keys={{"sam3": dict(prob_thd=0.4)}}))
'''


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """The toy module and its data in a temporary folder on sys.path; the configs generated with it into a copy
    of the configs tree. Every registration it makes is removed afterwards."""
    tmp = tmp_path_factory.mktemp("extending")
    data = tmp / "toy_data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(data / "images" / f"{i}.jpg")
        mask = np.zeros((48, 64), np.uint8)
        mask[10:30, 10:40] = 1 + i
        Image.fromarray(mask).save(data / "masks" / f"{i}.png")
    ext = tmp / "ext"
    ext.mkdir()
    (ext / f"{MODULE}.py").write_text(TOY_MODULE.format(data_root=data))
    (ext / "toy_classes.txt").write_text("background; sky\ncat; kitten\ndog\n")
    out = tmp / "configs"
    shutil.copytree(CONFIG_DIR, out)

    saved = [(registry, dict(registry)) for registry in (LAST_BLOCKS, VFM_REGISTRY, BENCHMARKS, PROTOCOLS)]
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ext))
        try:
            yield tmp, out
        finally:
            sys.modules.pop(MODULE, None)
            for registry, entries in saved:
                registry.clear()
                registry.update(entries)


def forget() -> None:
    """Unimport the toy module and remove its registrations."""
    sys.modules.pop(MODULE, None)
    LAST_BLOCKS.pop("toy_uniform", None)
    VFM_REGISTRY.pop("toy-colour", None)
    BENCHMARKS.pop("toy", None)
    PROTOCOLS.pop("toy_uniform", None)


@pytest.fixture()
def unregistered(outside):
    """The toy module not imported and none of its entries registered (each test imports it as a tool does)."""
    forget()
    yield outside
    forget()


@pytest.fixture(scope="module")
def generated(outside):
    """What ``tools/gen_configs.py --import toy_ext --out-dir <copy of configs/>`` does, once."""
    tmp, out = outside
    imports = import_extensions([MODULE])
    written, _, removed = generate.write_all(generate.expected_files(imports), out)
    assert written > 0 and removed == 0
    return out


def model_of(path: Path):
    from mmengine.config import Config

    return Config.fromfile(str(path), import_custom_modules=False).model


def test_generated_configs_carry_the_registered_entries(outside, generated):
    tmp, out = outside
    # The toy method on every benchmark and backbone (its own protocol), the toy benchmark for every method.
    method = (out / "toy_uniform" / "fsa_toy_uniform_vit-b16_toy.py").read_text()
    assert "# Toy Uniform + FSA | OpenAI ViT-B/16 | Toy (3 classes)" in method
    assert "'../_base_/protocols/toy_uniform_toy.py'" in method and "'../_base_/datasets/toy.py'" in method
    assert f"custom_imports = dict(imports=['fsa_seg.plugin', '{MODULE}'], allow_failed_imports=False)" in method
    model = model_of(out / "toy_uniform" / "fsa_toy_uniform_vit-b16_toy.py")
    assert (model.base_method, model.vfm, model.fsa, model.lamda) == ("toy_uniform", None, True, 3.0)
    assert (model.slide_crop, model.prob_thd, model.name_path) == (32, 0.25, str(tmp / "ext" / "toy_classes.txt"))
    assert model_of(out / "toy_uniform" / "toy_uniform_vit-h14_ade20k.py").lamda == 2.3
    assert (out / "sclip" / "fsa_sclip_vit-l14_toy.py").is_file() and (out / "fsa_sam3_toy.py").is_file()
    assert "prob_thd=0.4" in (out / "_base_" / "protocols" / "sam3_toy.py").read_text()
    protocol = (out / "_base_" / "protocols" / "toy_uniform_toy.py").read_text()
    assert "Toy Uniform's evaluation protocol on Toy (3 classes)" in protocol
    assert "prob_thd=0.25" in protocol and "protocol_short_side = 64" in protocol
    # The proxy with ProxyCLIP: its default lamda on every backbone, the FSA protocol with FSA.
    assert "protocols/fsa_voc21.py" in (out / "fsa_proxy_toy-colour_voc21.py").read_text()
    model = model_of(out / "fsa_proxy_toy-colour_voc21.py")
    assert (model.base_method, model.vfm, model.fsa, model.lamda, model.prob_thd) == ("proxyclip", "toy-colour", True,
                                                                                     2.7, 0.2)
    assert model_of(out / "proxyclip" / "proxy_toy-colour_vit-h14_toy.py").lamda == 2.7
    # The benchmark's dataset base, written from its registry entry.
    dataset = (out / "_base_" / "datasets" / "toy.py").read_text()
    assert "# Toy val (2 images), background + 2 classes." in dataset
    assert "dataset_type = 'ToyDataset'" in dataset and "scale=(2048, 64)" in dataset
    assert f"data_root = '{outside_data(out)}'" in dataset
    # The package's own configs are unchanged (no custom_imports where nothing outside is used).
    for rel in ("sclip/fsa_sclip_vit-b16_voc21.py", "fsa_proxy_sam_voc21.py", "_base_/datasets/voc21.py"):
        assert (out / rel).read_text() == (CONFIG_DIR / rel).read_text(), rel
    # --check: in sync with the module, its files stale without it.
    with_module = generate.expected_files((MODULE,))
    assert generate.differences(with_module, out) == []
    forget()
    without = generate.expected_files()
    stale = generate.differences(without, out)
    assert "stale: configs/toy_uniform/fsa_toy_uniform_vit-b16_toy.py" in stale
    assert "stale: configs/_base_/datasets/toy.py" in stale
    assert "stale: configs/proxyclip/fsa_proxy_toy-colour_vit-l14_voc21.py" in stale
    assert sorted(stale) == sorted(f"stale: {rel}" for rel in set(with_module) - set(without))


def outside_data(out: Path) -> Path:
    return out.parent / "toy_data"


def test_an_unimportable_module_is_named():
    with pytest.raises(ValueError, match="--import no_such_module_xyz: cannot import it"):
        import_extensions(["no_such_module_xyz"])


def test_list_configs_reads_the_module_from_custom_imports(generated, unregistered, tmp_path):
    """A few generated configs in a tree of their own: listed with the toy names, the module imported from the
    configs' custom_imports (no --import)."""
    tree = tmp_path / "configs"
    shutil.copytree(generated / "_base_", tree / "_base_")
    for rel in ("toy_uniform/fsa_toy_uniform_vit-b16_toy.py", "toy_uniform/toy_uniform_vit-l14_voc21.py",
                "fsa_proxy_toy-colour_toy.py", "proxyclip/proxy_toy-colour_vit-b16_voc20.py",
                "sclip/sclip_vit-b16_toy.py"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(generated / rel, tree / rel)
    rows = config_index.collect(str(tree))
    found = {tuple(r[c] for c in config_index.COLUMNS[:5]) for r in rows}
    assert found == {("toy_uniform", "on", "ViT-B-16", "-", "toy"), ("toy_uniform", "off", "ViT-L-14", "-", "voc21"),
                     ("proxyclip", "on", "ViT-B-16", "toy-colour", "toy"),
                     ("proxyclip", "off", "ViT-B-16", "toy-colour", "voc20"), ("sclip", "off", "ViT-B-16", "-", "toy")}
    assert MODULE in sys.modules
    assert len([r for r in rows if config_index.matches(r, "dataset", ["toy"])]) == 3


def test_check_data_checks_a_benchmark_of_the_module(outside, unregistered, tmp_path):
    assert "toy" not in BENCHMARKS
    import_extensions([MODULE])
    roots = data_check.resolve_roots(list(BENCHMARKS), str(tmp_path), from_configs=False)
    assert roots["toy"] == str(outside[0] / "toy_data") and roots["voc21"] == str(tmp_path / "VOCdevkit/VOC2012")
    report = data_check.check_benchmark(BENCHMARKS["toy"], roots["toy"])
    assert (report.status, report.images, report.masks, report.labels_seen) == ("ready", 2, 2, [0, 1, 2])
    assert data_check.format_table([report]).splitlines()[2].split()[:4] == ["toy", "ready", "2", "2"]


def test_reproduce_titles_and_registries_name_the_entries(outside, unregistered):
    importlib.import_module(MODULE)
    assert method_title("toy_uniform") == "Toy Uniform"
    assert method_title("proxyclip", "toy-colour") == "ProxyCLIP (Colour)"
    assert method_title("vanilla") == "CLIP" and method_title("proxyclip", "dinov2") == "ProxyCLIP (DINOv2)"
    assert "toy_uniform" in list_base_methods() and "toy-colour" in list_vfms() and "toy" in list_benchmarks()
    assert check_benchmarks(["toys"]) == ["toy"] and get_benchmark("toy").dataset_type == "ToyDataset"
    assert get_vfm("toy-colour").tokens(64) == 64 and get_vfm("sam").tokens(336) == 64 * 64
    from fsa_seg.perf import workloads

    assert workloads.vfm_tokens("toy-colour", 64) == 64 and workloads.vfm_tokens("mae", 336) == 441


@pytest.mark.skipif(not SHARED_VOC.is_dir(), reason="../shared/data/voc_mini not present")
def test_generated_config_runs_importing_the_module_itself(generated, unregistered, tmp_path, tiny_run_options):
    """The Runner imports the module from the config's custom_imports: the toy method and the toy proxy run
    (one image each) and the results name them."""
    from fsa_seg.apis import evaluate, read_results

    split = tmp_path / "one.txt"
    split.write_text("voc_sample_0000\n")
    runs = {"toy_uniform/fsa_toy_uniform_vit-b16_voc21.py": None, "fsa_proxy_toy-colour_voc21.py": "toy-colour"}
    for rel, vfm in runs.items():
        assert "toy_uniform" not in LAST_BLOCKS and "toy-colour" not in VFM_REGISTRY
        options = tiny_run_options(SHARED_VOC, **{"model.vfm": vfm, "test_dataloader.dataset.ann_file": str(split)})
        work = tmp_path / Path(rel).stem
        metrics = evaluate(str(generated / rel), options, str(work))
        saved = read_results(str(work))
        assert saved["images"] == 1 and saved["metrics"]["mIoU"] == pytest.approx(float(metrics["mIoU"]))
        assert saved["model"]["vfm"] == vfm
        assert saved["model"]["base_method"] == ("toy_uniform" if vfm is None else "proxyclip")
        assert MODULE in sys.modules
        forget()


def test_uniform_block_really_mixes_every_token(outside, unregistered, tmp_path):
    """The toy method's block is what the model runs: every patch gets the same logits (uniform attention)."""
    from fsa_seg.clip_model import CLIPSegModel

    importlib.import_module(MODULE)
    names = tmp_path / "names.txt"
    names.write_text("background\ncat\ndog\n")
    model = CLIPSegModel(name_path=str(names), clip_model="tiny-ViT-16", base_method="toy_uniform", vfm=None,
                         fsa=False, random_weights=True, cache_text=False, templates="single")
    logits = model.patch_logits(torch.randn(1, 3, 32, 48))
    assert logits.shape == (1, 3, 2, 3)
    assert torch.allclose(logits, logits[..., :1, :1].expand_as(logits), atol=1e-5)


def test_test_only_entries_are_usable_but_not_offered():
    """tiny-sam / tiny-dino: built by name, absent from listings, messages and generated configs."""
    assert VFM_REGISTRY["tiny-dino"].testing and "tiny-dino" not in list_vfms()
    assert {"tiny-sam", "tiny-dino"} <= set(list_vfms(include_testing=True))
    assert build_vfm("tiny-dino", random_weights=True) is not None
    with pytest.raises(ValueError) as err:
        build_vfm("no-such-proxy")
    assert "tiny" not in str(err.value) and "'sam'" in str(err.value)
    assert not any("tiny" in str(path) for path in generate.expected_files())
    from fsa_seg.perf.runner import parse_choices

    with pytest.raises(ValueError) as err:
        parse_choices("nope", list_vfms(include_testing=True), "proxy", shown=list_vfms())
    assert "tiny" not in str(err.value)


@pytest.mark.slow
def test_the_command_lines_take_the_module_from_pythonpath(outside, generated):
    """As a user runs them: the module's folder on PYTHONPATH, ``--import`` on the command line."""
    from tooling import run_tool

    tmp, out = outside
    env = {"PYTHONPATH": str(tmp / "ext")}
    done = run_tool("gen_configs", "--check", "--import", MODULE, "--out-dir", str(out), env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith(" 0 out of date"), done.stdout[-2000:] + done.stderr
    done = run_tool("check_data", "--import", MODULE, "--benchmarks", "toy", "--strict", env=env)
    assert done.returncode == 0 and "1/1 benchmarks ready" in done.stdout, done.stdout + done.stderr
    done = run_tool("list_configs", "--import", MODULE, "--config-dir", str(out / "toy_uniform"), "--dataset", "toy",
                    "--csv", env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(r.split(",")[1] + r.split(",")[2] for r in done.stdout.split()[1:]) == sorted(
        f + b for f in ("on", "off") for b in ("ViT-B-16", "ViT-L-14", "ViT-H-14"))
