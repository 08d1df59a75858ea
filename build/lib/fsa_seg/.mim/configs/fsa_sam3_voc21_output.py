# Ablation (SAM3 + FSA, VOC21): output-level FSA. A_fb propagates the present prompts' score logits on the
# token grid; nothing is re-run. Any benchmark: --cfg-options model.fsa_mode=output
_base_ = ['./fsa_sam3_voc21.py']

model = dict(fsa_mode='output')
