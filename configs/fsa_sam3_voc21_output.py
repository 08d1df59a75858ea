# Ablation (SAM3 + FSA, VOC21): output-level FSA. A_fb only propagates the score maps; no re-run of the last
# encoder layer and the heads (cheaper baseline). Any benchmark: --cfg-options model.fsa_mode=output
_base_ = ['./fsa_sam3_voc21.py']

model = dict(fsa_mode='output')
