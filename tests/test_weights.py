"""Weights: local files, offline with nothing cached, checkpoints of another model, random weights."""
import json
import os
import subprocess
import sys

import open_clip
import pytest
import torch

from fsa_seg.clip_backbone import create_clip
from fsa_seg.open_vocab import resolve_device_dtype
from fsa_seg.vfm import SAM_VIT_B_URL, build_vfm
from fsa_seg.weights import WeightsUnavailableError
from tooling import REPO, run_tool


def test_local_clip_checkpoint_loads_the_same_weights(tmp_path):
    model = open_clip.create_model("tiny-ViT-16", pretrained=None)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = create_clip("tiny-ViT-16", pretrained=None, checkpoint=str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_missing_clip_checkpoint_file_names_the_file(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"nope\.pt.*model\.clip_checkpoint"):
        create_clip("ViT-B-16", "openai", checkpoint=str(tmp_path / "nope.pt"))


def test_clip_checkpoint_of_another_model_is_rejected(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model("tiny-ViT-16", pretrained=None).state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="does not match CLIP ViT-B-16"):
        create_clip("ViT-B-16", "openai", checkpoint=str(path))


def test_unknown_clip_model_and_tag():
    with pytest.raises(ValueError, match="unknown open_clip model"):
        create_clip("ViT-X-99", "openai")
    with pytest.raises(ValueError, match="no pretrained tag 'nonsense'"):
        create_clip("ViT-B-16", "nonsense")


OFFLINE_SCRIPT = r"""
import json, sys
from fsa_seg.clip_backbone import create_clip
from fsa_seg.vfm import build_vfm
from fsa_seg.weights import WeightsUnavailableError
out = {}
for name, build in [("clip", lambda: create_clip("ViT-B-16", "openai")),
                    ("dino", lambda: build_vfm("dino")), ("mae", lambda: build_vfm("mae"))]:
    try:
        build()
        out[name] = "loaded"
    except WeightsUnavailableError as err:
        out[name] = str(err)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_offline_without_cache_names_the_source_and_the_fix(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "timm/vit_base_patch16_clip_224.openai" in out["clip"] and "model.clip_checkpoint" in out["clip"]
    assert "timm/vit_base_patch8_224.dino" in out["dino"] and "model.vfm_checkpoint" in out["dino"]
    assert "timm/vit_base_patch16_224.mae" in out["mae"]


def test_sam_checkpoint_not_cached_and_not_downloadable(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        build_vfm("sam")
    message = str(err.value)
    assert "sam_vit_b_01ec64.pth" in message and SAM_VIT_B_URL in message and "model.vfm_checkpoint" in message


def test_sam_checkpoint_missing_or_of_another_model(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="missing.pth"):
        build_vfm("sam", checkpoint=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(WeightsUnavailableError, match="does not match SAM ViT-B.*shape mismatch"):
        build_vfm("sam", checkpoint=str(wrong))


def test_random_weights_are_announced_loudly(capsys):
    create_clip("tiny-ViT-16", None, random_weights=True)
    assert "RANDOM WEIGHTS for CLIP tiny-ViT-16" in capsys.readouterr().out


def test_test_models_and_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="random_weights=True"):
        build_vfm("tiny-dino")
    with pytest.raises(ValueError, match="unknown vfm 'dino3'"):
        build_vfm("dino3")


def test_precision_choice():
    assert resolve_device_dtype("auto", "cpu") == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("bf16", "cpu")[1] == torch.bfloat16
    with pytest.raises(ValueError, match="not supported on CPU"):
        resolve_device_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_device_dtype("fp8", "cpu")


@pytest.mark.slow
def test_tools_test_reports_bad_input_in_one_line(tmp_path):
    config = str(REPO / "configs" / "fsa_proxy_sam_voc.py")
    runs = [run_tool("test", tmp_path / "missing.py"),
            run_tool("test", config, "--cfg-options", "model.topp=0.3"),
            run_tool("test", config, "--cfg-options", f"test_dataloader.dataset.data_root={tmp_path / 'VOC'}")]
    assert [r.returncode for r in runs] == [2, 2, 2]
    errors = [[line for line in r.stderr.splitlines() if line.startswith("error:")] for r in runs]
    assert [len(e) for e in errors] == [1, 1, 1], [r.stderr[-500:] for r in runs]
    assert "missing.py" in errors[0][0] and "top_p" in errors[1][0] and "data/README.md" in errors[2][0]
