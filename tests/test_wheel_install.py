"""A plain, non-editable ``pip install .`` into an environment that already has mmseg: the wheel carries the
configs, class-name files and model configs, and ``tools/test.py`` and the Python API run a packaged config
from a directory outside the source tree.

The wheel is built without network (``--no-deps --no-build-isolation``) and installed with ``--prefix`` into a
fresh virtual environment that sees this environment's packages through a ``.pth`` line (so mmseg, torch and the
rest come from here, and nothing is downloaded). A ``.pth`` line adds a directory to ``sys.path`` without running
the ``.pth`` files inside it, so the editable install of the checkout stays invisible there.
"""
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tiny import as_cli, tiny_run_options

REPO = Path(__file__).resolve().parents[1]
SHARED_VOC = REPO.parent / "shared" / "data" / "voc_mini"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of the new environment, its environment variables, a working directory outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the tracked files: an in-tree build would leave build/ in the checkout, and a stale
    # build/ there could put removed modules into the wheel.
    source = root / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        src, dst = REPO / rel, source / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst)
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    wheel, = wheels.glob("fsa_seg-*.whl")
    venv = root / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    # --ignore-installed: without it pip uninstalls this environment's own (editable) fsa-seg first.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
                    "--prefix", str(venv), str(wheel)], check=True, capture_output=True, timeout=300)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    assert subprocess.run([sys.executable, "-c", "import fsa_seg"], cwd=root, env=clean).returncode == 0, \
        "installing the wheel elsewhere removed this environment's fsa-seg"
    here = [p for p in site.getsitepackages() + [sysconfig.get_path("purelib")] if Path(p).is_dir()]
    (purelib / "zz_host_packages.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(here)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    work = root / "elsewhere"
    work.mkdir()
    return python, env, work


def test_the_wheel_holds_the_package_and_its_files(installed):
    python, env, work = installed
    probe = ("import json, fsa_seg, fsa_seg.resources as r; "
             "print(json.dumps(dict(package=fsa_seg.__file__, configs=str(r.CONFIG_DIR), "
             "voc=r.config_path('configs/fsa_proxy_sam_voc21.py').is_file(), "
             "n=len(list(r.CONFIG_DIR.rglob('*.py'))), names=sorted(p.name for p in r.CLASS_NAME_DIR.glob('*.txt')), "
             "tiny=(r.MODEL_CONFIG_DIR / 'tiny-ViT-16.json').is_file())))")
    done = subprocess.run([str(python), "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(python.parents[1]) in found["package"], found  # the installed copy, not the checkout
    assert not found["configs"].startswith(str(REPO)), found
    assert found["voc"] and found["tiny"]
    assert found["n"] == len(list((REPO / "configs").rglob("*.py")))
    assert found["names"] == sorted(p.name for p in (REPO / "fsa_seg" / "resources" / "class_names").glob("*.txt"))


@pytest.mark.skipif(not SHARED_VOC.is_dir(), reason="../shared/data/voc_mini not present")
def test_tools_test_runs_a_packaged_config(installed, tmp_path):
    python, env, work = installed
    config = subprocess.run([str(python), "-c", "import fsa_seg.resources as r; "
                             "print(r.config_path('fsa_proxy_sam_voc21.py'))"], cwd=work, env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert not config.startswith(str(REPO))
    options = tiny_run_options(tmp_path, SHARED_VOC, **{"test_dataloader.dataset.indices": 1})
    done = subprocess.run([str(python), str(REPO / "tools" / "test.py"), config, "--work-dir", str(tmp_path / "wd"),
                           "--cfg-options", *as_cli(options)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    results = json.loads((tmp_path / "wd" / "results.json").read_text())
    assert 0.0 <= results["metrics"]["mIoU"] <= 100.0
    assert results["config"] == config
