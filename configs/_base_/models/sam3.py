# SAM3 (+ FSA) segmentor defaults, used by configs/sam3_*.py and configs/fsa_sam3_*.py. Those configs inherit
# a dataset config (which carries the CLIP segmentor) and replace its model with
#     model = dict(_base_.sam3_model, _delete_=True, name_path=..., prob_thd=...)
# The names are sam3_* and not model: a config cannot inherit the same key from two bases.
# Every key can be overridden with --cfg-options model.KEY=VALUE.

sam3_model = dict(
    type='SAM3Segmentor',
    # Hub id (gated: accept the licence on https://huggingface.co/facebook/sam3 and log in) or a local folder.
    checkpoint='facebook/sam3',
    # Per-prompt maps: 'semantic' (semantic head) | 'instances' (instance masks x instance scores, max) |
    # 'both' (both_reduce: 'mean' | 'max'); times the prompt's presence probability (presence_weighting).
    score_source='semantic',
    both_reduce='mean',
    presence_weighting=True,
    # Prompts decoded together against one crop's vision features.
    query_batch_size=16,
    # FSA (paper Sec. 3) on SAM3: off here, on in configs/fsa_sam3_*.py.
    fsa=False,
    # 'attention': ensemble A_fb with the last DETR-encoder layer's self-attention, re-run that layer and the
    # heads; 'output': propagate the score maps with A_fb (cheaper baseline).
    fsa_mode='attention',
    # Feedback signal: prompts with presence < presence_thd leave the distributions; isolation subtracts the
    # image-global response; scales of the probabilities inside the softmax.
    presence_pruning=True,
    presence_thd=0.5,
    isolation=True,
    feedback_scale=10.0,
    isolation_scale=10.0,
    # Released FSA pruning mass and sharpening.
    top_p=0.45,
    lamda=3.0,
    # Prompts per re-run of the adapted layer (each holds heads x N x N attention, N = 72 x 72 tokens).
    fsa_batch_size=4,
    # Whole image (resized to SAM3's 1008 x 1008 input); slide_crop > 0 for sliding windows.
    slide_crop=0,
    slide_stride=672,
    crop_batch_size=1,
    # 'auto' = fp16 on CUDA, fp32 on CPU; or 'fp32' / 'fp16' / 'bf16'.
    precision='auto',
    device=None,
    # Random weights for pipeline checks only (tiny test architecture unless sam3_config is given).
    random_weights=False,
    sam3_config=None,
)

# SAM3 sees 1008 x 1008 pixels: the images are resized so the short side is 1008 (long side <= 2048) instead
# of the CLIP protocol's 336/448; the ground truth keeps its original size.
sam3_resize = dict(type='Resize', scale=(2048, 1008), keep_ratio=True)

# Background threshold for the benchmarks with a background class: SAM3's own binarisation threshold for
# its semantic maps (Sam3ImageProcessor.post_process_semantic_segmentation); untuned.
sam3_background_thd = 0.5

sam3_custom_imports = dict(imports=['fsa_seg', 'fsa_seg.sam3'], allow_failed_imports=False)
