# Ablation (SAM3 + FSA, VOC21): the three strategies' A_fb maps (isolation only, pruning only, both) averaged into
# one map and run once: cheaper than the ensemble of results (fsa_sam3_voc21_three_strategies.py), not the same
# (the heads are nonlinear). Any benchmark: --cfg-options model.fsa_strategies=ensemble
_base_ = ['./fsa_sam3_voc21.py']

model = dict(fsa_strategies='ensemble')
