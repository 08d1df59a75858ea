# Runtime shared by every fsa-seg config: evaluation only (training-free), mmseg scope, and the plugin import
# that registers fsa-seg's segmentors, datasets and metric. (The evaluator is the dataset base's.)
custom_imports = dict(imports=['fsa_seg.plugin'], allow_failed_imports=False)
default_scope = 'mmseg'

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
)
# Images done / total, images/s and ETA after every test batch (a bar on a terminal, else one line per batch);
# it also lowers the logger's interval to about 20 lines per run (fsa_seg/plugin/hooks.py).
custom_hooks = [dict(type='ImageProgressHook')]
