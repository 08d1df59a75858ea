# The SAM3 (+ FSA) segmentor with its defaults, used by configs/sam3_*.py and configs/fsa_sam3_*.py (with a
# dataset base and the sam3 protocol base of the benchmark: class names, background threshold, resize).
# Every key can be overridden with --cfg-options model.KEY=VALUE.

model = dict(
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
