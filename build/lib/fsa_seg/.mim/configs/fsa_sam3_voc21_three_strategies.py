# Ablation (SAM3 + FSA, VOC21): the three-strategy ensemble of results (the paper's Table 7): isolation only,
# pruning only and both, each with its own A_fb and adapted pass, their probabilities averaged, instead of the
# paper's single A_fb. Any benchmark: --cfg-options model.fsa_strategies=ensemble_results
_base_ = ['./fsa_sam3_voc21.py']

model = dict(fsa_strategies='ensemble_results')
