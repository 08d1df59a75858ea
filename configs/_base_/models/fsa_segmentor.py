# The FSA segmentor with the released defaults (FSA-ProxyCLIP, OpenAI ViT-B/16, SAM proxy). The per-benchmark
# keys (name_path, prob_thd, window, logit scale) come from the protocol base a config composes with it.
# Every key can be overridden with --cfg-options model.KEY=VALUE.

model = dict(
    type='FSASegmentor',
    # CLIP backbone, by open_clip name and pretrained tag (or a local checkpoint file).
    clip_model='ViT-B-16',
    clip_pretrained='openai',
    clip_checkpoint=None,
    # Last-block attention of the base method (docs/design.md, "Base methods"): vanilla | maskclip | sclip |
    # clearclip | naclip | proxyclip; base_method_cfg holds its options, e.g. dict(gaussian_std=5.0) for
    # naclip, dict(residual=False, ffn=False) for an ablation of a CLIP-native method.
    base_method='proxyclip',
    base_method_cfg=dict(),
    # Proxy vision foundation model for ProxyCLIP: sam | dino | dinov2 | mae.
    vfm='sam',
    vfm_checkpoint=None,
    beta=1.2,
    gamma=3.0,
    # FSA (paper Sec. 3): on/off, top-p pruning mass, sharpening lambda.
    fsa=True,
    top_p=0.45,
    lamda=3.0,
    # Text side: class-name file ('; '-separated synonyms per line) or a builtin name (voc21, ...).
    name_path='voc21',
    # Prompt templates per class name: 'openai_imagenet' (the 80 used by all the papers) | 'single'.
    templates='openai_imagenet',
    # Prediction: background threshold (class 0 below it); SCLIP's area threshold (classes predicted on at most
    # this share of the non-background pixels are dropped; None = off); NACLIP's renormalisation of the stored
    # probabilities (labels unaffected).
    prob_thd=0.0,
    area_thd=None,
    renormalize=False,
    logit_scale=40.0,
    slide_crop=336,
    slide_stride=112,
    # Windows whose sides are not multiples of the patch size: 'pad' (zero-pad, cut back) or 'floor' (the patch
    # grid drops the remainder, logits stretched over the window; NACLIP's released behaviour).
    patch_fit='pad',
    # Optional PAMR post-refinement of the score maps at the original image size (SCLIP/NACLIP).
    pamr=False,
    pamr_steps=10,
    pamr_dilations=(8, 16),
    # 'auto' = fp16 on CUDA, fp32 on CPU; or 'fp32' / 'fp16' / 'bf16'.
    precision='auto',
    device=None,
    # Random weights for pipeline checks only (prints a loud warning; never for results).
    random_weights=False,
)
