# ADE20K-847 (ADE20K-full, ADE20K_2021_17_01) validation (2000 images), 847 classes; 16-bit masks,
# 65535 = unlabeled (ignored). Prepared as CAT-Seg does: tools/dataset_converters/ade847.py.
# The dataset only (the model and its per-benchmark keys: configs/_base_/models/, configs/_base_/protocols/).
# The released FSA/ProxyCLIP cfg_ade847.py (short side 448, no background threshold, the
# 336/112 window), except the evaluator's ignore_index: the released configs keep IoUMetric's default 255,
# which ignores the pixels of class 255 ('pier' here) and counts predictions on unlabeled pixels; pass
# --cfg-options test_evaluator.ignore_index=255 to reproduce that.
dataset_type = 'ADE20K847Dataset'
# Relative to the working directory (the repository root): see data/README.md, or override
# with --cfg-options test_dataloader.dataset.data_root=/path/to/ADE20K_2021_17_01
data_root = 'data/ADE20K_2021_17_01'

test_pipeline = [
    # color_type='color' decodes grayscale, palette and RGBA images as 3-channel BGR.
    dict(type='LoadImageFromFile', color_type='color'),
    # Short side to 448 (long side at most 2048), aspect ratio kept.
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
    # After Resize, so the ground truth keeps its original size; 16-bit masks (class ids up to 846).
    dict(type='LoadUInt16Annotations'),
    dict(type='PackSegInputs'),
]

test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images_detectron2/validation', seg_map_path='annotations_detectron2/validation'),
        ann_file='validation.txt',
        pipeline=test_pipeline,
    ),
)
test_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'], ignore_index=65535)
