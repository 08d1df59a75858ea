# Ablation (SAM3 + FSA, VOC21): A_fb averaged over three strategies (isolation only, pruning only, both) instead
# of the paper's single A_fb. Any benchmark: --cfg-options model.fsa_strategies=ensemble
_base_ = ['./fsa_sam3_voc21.py']

model = dict(fsa_strategies='ensemble')
