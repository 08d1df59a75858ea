# The SAM3 (+ FSA) segmentor with its defaults, used by configs/sam3_*.py and configs/fsa_sam3_*.py (with a
# dataset base and the sam3 protocol base of the benchmark: SAM3 class names, background and instance thresholds,
# resize). Every key can be overridden with --cfg-options model.KEY=VALUE. docs/sam3.md.

model = dict(
    type='SAM3Segmentor',
    # Hub id (gated: accept the licence on https://huggingface.co/facebook/sam3 and log in) or a local folder.
    checkpoint='facebook/sam3',
    # Score recipe, per prompt (fsa_seg/sam3/scores.py). Default = SegEarth-OV-3:
    # presence x max(semantic map, max over kept instances of mask x score x presence), an instance kept if
    # score x presence >= instance_thd (SAM3's confidence threshold) and among the top_k best (0: no limit).
    # score_source: 'both' | 'semantic' | 'instances'; both_reduce: 'max' | 'mean'. The earlier 'instances'
    # source (every instance, weighted by its score only) is instance_thd=0, instance_presence=False.
    score_source='both',
    both_reduce='max',
    instance_thd=0.5,
    top_k=0,
    instance_presence=True,
    presence_weighting=True,
    # Prompts decoded together against one crop's vision features.
    query_batch_size=16,
    # FSA (paper Sec. 3) on SAM3: off here, on in configs/fsa_sam3_*.py.
    fsa=False,
    # 'attention': re-run the present prompts with the adaptation ensemble at fsa_placement, then the heads;
    # 'output': propagate the present prompts' score logits with A_fb (no re-run).
    fsa_mode='attention',
    # 'encoder_output' (A_fb on the tokens the heads read) | 'last_layer' | 'last_k' (the last fsa_layers
    # encoder layers): fsa_seg/sam3/placement.py.
    fsa_placement='encoder_output',
    fsa_layers=1,
    # Present prompts (presence probability >= presence_thd) give the feedback and are re-run; the others keep
    # their first-pass maps.
    presence_thd=0.5,
    # Feedback from the present prompts' token log-odds (semantic logit + log presence). Isolation (paper Eq. 3):
    # 'uniform' subtracts the log-odds of the placement run with uniform attention (FSA's isolation; one more
    # semantic-head pass per present prompt) | 'mean' the token mean per prompt (an approximation, no extra pass)
    # | 'none'. Scales of the log-odds inside the softmax: feedback 1, isolation 1.75 (the released 35:20 ratio).
    isolation='uniform',
    feedback_scale=1.0,
    isolation_scale=1.75,
    # Released FSA pruning mass and sharpening. fsa_strategies: 'both' = the paper's single A_fb;
    # 'ensemble_results' = the three-strategy ensemble of the paper's Table 7 (isolation only, pruning only, both:
    # each run, their probabilities averaged); 'ensemble' = those three A_fb averaged into one map, run once.
    top_p=0.45,
    lamda=3.0,
    fsa_strategies='both',
    # Present prompts re-run together.
    fsa_batch_size=4,
    # Whole image (resized to SAM3's 1008 x 1008 input); slide_crop > 0 for sliding windows (window logits
    # averaged).
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
