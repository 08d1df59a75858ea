"""Parity of our SAM3 decode path with Meta's reference forward, at SAM3's full size, random weights, fp32, CPU.

Builds the reference image model (``sam3`` package, ``build_sam3_image_model``, 840.5M parameters) with seeded
random weights, converts them to ``Sam3Model`` keys (``fsa_seg.sam3.reference.official_to_hf``, strict load), and
compares on one 1008 x 1008 image and a few prompts:

* ours: ``fsa_seg.sam3.decode.forward_prompts`` (backbone and geometry token once, then all prompts), against
  the reference ``Sam3Image.forward_grounding`` with an empty geometric prompt;
* for scale: transformers' own ``Sam3Model.forward`` (text only, no geometry token) on the same weights;
* with ``--hf-eps``: ours again with the ViT LayerNorm eps transformers defaults to (1e-6, the reference has 1e-5).

Also checks that ``fsa_seg.sam3.reference.build_official`` (the reference modules assembled from a Sam3Config,
used at tiny size by tests/test_sam3_parity.py) gives the reference builder's structure at full size.
Prints max abs differences, relative to the reference's magnitude, and cosines; asserts nothing, times are
informative only. Memory: each 840M-parameter fp32 model is 3.4 GB; at most two are alive at once (the builder
check's, freed before the forward; the reference's weights while they are loaded into ``Sam3Model``, then freed),
and the peak resident memory is printed after each stage and at the end. About ten minutes on 2 cores.

    PYTHONPATH=$PWD nice python tools/sam3_parity.py [--image path.jpg] [--prompts cat "a red car" sky]
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time

import torch
import torch.nn.functional as F

from fsa_seg.sam3 import decode
from fsa_seg.sam3 import reference as official
from fsa_seg.sam3.loading import build_tokenizer, use_reference_layer_norm_eps

SIZE = 1008


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, GiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 30 if sys.platform == "darwin" else 2 ** 20)


def stage(text: str, start: float) -> None:
    """One progress line: what was done, its time and the peak resident memory so far."""
    print(f"{text} ({time.time() - start:.1f} s; peak RSS so far {peak_rss_gib():.2f} GiB)", flush=True)


def load_image(path: str | None, seed: int) -> torch.Tensor:
    """``[1, 3, 1008, 1008]``, normalised as ``Sam3Processor`` does; by default a seeded random image."""
    if path is None:
        return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)).mul_(2).sub_(1)
    import numpy as np
    from PIL import Image

    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    image = F.interpolate(image, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return image.div_(255).sub_(0.5).div_(0.5)


def report(title: str, ours, ref) -> None:
    print(f"\n{title}")
    print(f"  {'output':16s} {'shape':>20s} {'max|diff|':>11s} {'max|ref|':>10s} {'rel':>10s} {'cosine':>12s}")
    for key, m in official.parity_metrics(ours, ref).items():
        shape = "x".join(map(str, getattr(ours, key).shape))
        print(f"  {key:16s} {shape:>20s} {m['max_abs_diff']:11.3e} {m['ref_max_abs']:10.3e} {m['rel']:10.3e} "
              f"{m['cosine']:12.9f}")


def check_builder(reference: torch.nn.Module) -> None:
    from transformers import Sam3Config

    start = time.time()
    ours = official.build_official(Sam3Config())
    same_shapes = {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    same_tree = repr(ours) == repr(reference)
    del ours
    gc.collect()
    stage(f"build_official(Sam3Config()) vs the reference builder: same parameter names and shapes: {same_shapes}; "
          f"same module tree (repr): {same_tree}", start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", help="an image file (default: a seeded random image)")
    parser.add_argument("--prompts", nargs="+", default=["cat", "a red car", "sky", "person"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and image")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--hf-eps", action="store_true", help="also run ours with transformers' ViT eps 1e-6")
    parser.add_argument("--skip-builder-check", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import Sam3Config, Sam3Model

    start = time.time()
    reference = official.randomize_(official.build_official_full(), args.seed)
    stage(f"reference model: {sum(p.numel() for p in reference.parameters()) / 1e6:.1f}M parameters", start)
    if not args.skip_builder_check:
        check_builder(reference)

    pixels = load_image(args.image, args.seed)
    ids, mask = build_tokenizer(None, True)(args.prompts)
    print(f"prompts {args.prompts}; same token ids as the reference tokenizer: "
          f"{torch.equal(ids, official.official_tokens(reference, args.prompts))}")
    start = time.time()
    ref = official.official_forward(reference, pixels, args.prompts)
    stage(f"reference forward; prompt tokens {ref['prompt'].shape[1]}", start)

    # The reference's weights are all it is still needed for: one model alive at a time from here.
    start = time.time()
    weights = reference.state_dict()
    del reference
    gc.collect()
    model = use_reference_layer_norm_eps(Sam3Model(Sam3Config())).eval()
    official.load_into_hf(model, weights)
    del weights
    gc.collect()
    stage(f"Sam3Model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, strict load of the "
          f"converted state dict, reference freed", start)

    start = time.time()
    ours = decode.forward_prompts(model, pixels, ids, mask)
    stage("our decode path", start)
    report("ours (decode.forward_prompts: geometry token, raw presence, reference ViT eps) vs reference", ours, ref)
    del ours
    gc.collect()

    start = time.time()
    with torch.no_grad():
        vision = model.get_vision_features(pixels)  # once, repeated (as views) for the prompts
        for key in ("fpn_hidden_states", "fpn_position_encoding"):
            vision[key] = tuple(x.expand(len(args.prompts), -1, -1, -1) for x in vision[key])
        plain = model(vision_embeds=vision, input_ids=ids, attention_mask=mask)
    del vision
    print()
    stage("Sam3Model.forward", start)
    report("transformers' Sam3Model.forward (text only: 32 prompt tokens, no geometry token) vs reference",
           plain, ref)
    del plain
    gc.collect()

    if args.hf_eps:
        use_reference_layer_norm_eps(model, eps=1e-6)
        report("ours with transformers' default ViT LayerNorm eps (1e-6) vs reference",
               decode.forward_prompts(model, pixels, ids, mask), ref)
    print(f"\npeak resident memory of the whole run: {peak_rss_gib():.2f} GiB")

if __name__ == "__main__":
    main()
