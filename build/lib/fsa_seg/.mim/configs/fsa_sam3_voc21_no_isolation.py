# Ablation (SAM3 + FSA, VOC21): no attention isolation (the present prompts' log-odds enter the softmax as they
# are). Any benchmark: --cfg-options model.isolation=none
_base_ = ['./fsa_sam3_voc21.py']

model = dict(isolation='none')
