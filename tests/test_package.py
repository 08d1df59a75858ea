"""The package's shape: the models import without mmseg, mmcv or transformers; the declared dependencies are
the installed ones; tools and tests load nothing by file path."""
import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]

STANDALONE = ["fsa_seg", "fsa_seg.fsa", "fsa_seg.last_block", "fsa_seg.vfm", "fsa_seg.clip_backbone",
              "fsa_seg.clip_model", "fsa_seg.open_vocab", "fsa_seg.naive_fsa", "fsa_seg.benchmarks",
              "fsa_seg.class_names", "fsa_seg.sliding_window", "fsa_seg.pamr", "fsa_seg.diagnostics.data_check",
              "fsa_seg.perf.workloads", "fsa_seg.perf.runner", "fsa_seg.converters.voc",
              "fsa_seg.diagnostics.env_info", "fsa_seg.distributed", "fsa_seg.perf.gpu_check"]


@pytest.mark.slow
def test_the_models_import_without_mmseg_mmcv_or_transformers():
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in ("mmseg", "mmcv", "mmengine", "transformers"))
    code = f"import sys; {blocked}; " + "; ".join(f"import {m}" for m in STANDALONE)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # and the CLIP model runs there (random tiny weights)
    code += ("; import torch; from fsa_seg.clip_model import CLIPSegModel; "
             "m = CLIPSegModel(name_path='voc21', clip_model='tiny-ViT-16', vfm='tiny-dino', random_weights=True, "
             "cache_text=False, templates='single', slide_crop=64, slide_stride=32); "
             "p = m.predict([torch.randn(3, 40, 72)])[0]; assert p.labels.shape == (40, 72), p.labels.shape")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _setup_lists():
    tree = ast.parse((REPO / "setup.py").read_text())
    lists = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
             if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
             and node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE")}
    return lists["INSTALL_REQUIRES"], lists["EXTRAS_REQUIRE"]


@pytest.mark.parametrize("group", ["install_requires", "sam3", "tests"])
def test_declared_dependencies_are_what_is_installed(group):
    install, extras = _setup_lists()
    for text in install if group == "install_requires" else extras[group]:
        req = Requirement(text)
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), (text, version)


def test_setup_declares_what_the_package_imports():
    """Every third-party top-level import of fsa_seg is a declared dependency (or the standard library)."""
    install, extras = _setup_lists()
    declared = {Requirement(t).name.lower().replace("_", "-") for t in install + sum(extras.values(), [])}
    import_names = {"PIL": "pillow", "cv2": None, "open_clip": "open-clip-torch", "segment_anything": "segment-anything",
                    "mmseg": "mmsegmentation", "sam3": None, "packaging": None}
    found = set()
    for path in (REPO / "fsa_seg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    third_party = {m for m in found if m not in sys.stdlib_module_names and m != "fsa_seg"}
    for module in sorted(third_party):
        name = import_names.get(module, module.lower().replace("_", "-"))
        if name is not None:
            assert name in declared, f"fsa_seg imports {module}, which setup.py does not declare"


def test_tools_and_tests_load_nothing_by_path():
    # the words are split so that a `git grep` for them over tools/ and tests/ finds nothing, this file included
    pattern = re.compile("spec_from_" + r"file_location|sys\.path\.(insert|append)")
    offenders = [str(p.relative_to(REPO)) for folder in ("tools", "tests") for p in (REPO / folder).rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []
