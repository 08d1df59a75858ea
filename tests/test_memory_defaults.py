"""Memory defaults: ``crop_batch_size=None`` chooses the crop batch from the available memory and the per-crop
estimate; an out-of-memory error of a crop batch is one line saying what to lower."""
import pytest
import torch

from fsa_seg import open_vocab
from fsa_seg.clip_model import CLIPSegModel
from fsa_seg.open_vocab import AUTO_MAX_CROPS, CropMemoryError, auto_crop_batch_size

TINY = dict(name_path="voc21", clip_model="tiny-ViT-16", vfm="tiny-dino", random_weights=True, cache_text=False,
            templates="single", slide_crop=32, slide_stride=16)


@pytest.mark.parametrize("per_crop,available,expected", [
    (100, 1000, 5), (100, 999, 4), (100, 10 ** 9, AUTO_MAX_CROPS), (1000, 100, 1), (None, 1000, 1), (100, None, 1)])
def test_auto_crop_batch_size(per_crop, available, expected):
    assert auto_crop_batch_size(per_crop, available) == expected


def test_unset_crop_batch_size_is_chosen_from_available_memory(monkeypatch, capsys):
    model = CLIPSegModel(**TINY)
    per_crop = model.crop_memory_bytes()
    assert per_crop > 0
    seen = []

    def available(device):
        seen.append(device)
        return 6 * per_crop + 1  # half of it holds 3 crops

    monkeypatch.setattr(open_vocab, "available_memory", available)
    assert model.crop_batch_size == 3 and seen == [model.run_device]
    assert "crop_batch_size auto: 3 (about" in capsys.readouterr().out
    assert model.crop_batch_size == 3 and len(seen) == 1  # chosen once
    fixed = CLIPSegModel(crop_batch_size=5, **TINY)
    assert fixed.crop_batch_size == 5 and len(seen) == 1


@pytest.mark.parametrize("crop", [32, 64])
def test_estimate_counts_both_towers_and_the_last_block(crop):
    """tiny-ViT-16 (patch 16, width 64) and tiny-dino (patch 8, width 32, one CLS token) on a crop: block values of
    both towers (16 per token and channel, fp32) and 6 fp32 [N, N] maps of the N proxy grid tokens."""
    model = CLIPSegModel(**dict(TINY, slide_crop=crop))
    clip_tokens, grid = 1 + (crop // 16) ** 2, (crop // 8) ** 2
    expected = 4 * 16 * (clip_tokens * 64 + (1 + grid) * 32) + 4 * 6 * grid ** 2
    assert model.crop_memory_bytes() == expected


def test_sam_estimate_uses_the_padded_window_layout_and_the_64x64_grid():
    model = CLIPSegModel(**dict(TINY, vfm="tiny-sam"))  # 1024 input, patch 16, window 8, width 32
    assert model.vfm.token_shape(32, 32) == (64 * 64, 32, 64 * 64)
    expected = 4 * 16 * ((1 + 2 * 2) * 64 + 64 * 64 * 32) + 4 * 6 * (64 * 64) ** 2
    assert model.crop_memory_bytes() == expected


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 805306368 bytes"),
                                   torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")])
def test_out_of_memory_says_what_to_lower(monkeypatch, error):
    model = CLIPSegModel(crop_batch_size=2, **TINY)

    def fail(crops):
        raise error

    monkeypatch.setattr(model, "crop_scores", fail)
    with pytest.raises(CropMemoryError) as info:
        model.predict([torch.zeros(3, 48, 48)])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("out of memory scoring 2 crop(s) of 32x32 on cpu: lower model.crop_batch_size (now 2;")
    # the configured batch is named, not the size of a last, smaller batch
    model.crop_batch_size = 8
    with pytest.raises(CropMemoryError, match=r"scoring 4 crop\(s\) of 32x32 on cpu: lower model.crop_batch_size "
                                              r"\(now 8;"):
        model.predict([torch.zeros(3, 48, 48)])
    # one crop a batch: the crop itself is what to lower
    model.crop_batch_size = 1
    with pytest.raises(CropMemoryError,
                       match=r"1 crop\(s\) of 32x32 on cpu: lower model.slide_crop \(crops of 32x32\)"):
        model.predict([torch.zeros(3, 32, 32)])
    # variants: the shared part and the scoring are covered too
    monkeypatch.setattr(model, "crop_features", fail)
    with pytest.raises(CropMemoryError):
        model.predict_variants([torch.zeros(3, 32, 32)], None, [dict(top_p=0.3)])


def test_other_errors_pass_unchanged(monkeypatch):
    model = CLIPSegModel(crop_batch_size=2, **TINY)

    def fail(crops):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model, "crop_scores", fail)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        model.predict([torch.zeros(3, 32, 32)])
