# PASCAL-Context val (5105 images) with the full 459 labels; 16-bit masks, 65535 = unlabeled (ignored).
# Prepared as CAT-Seg does: tools/dataset_converters/pascal_context459.py.
# The dataset only (the model and its per-benchmark keys: configs/_base_/models/, configs/_base_/protocols/).
# The released FSA/ProxyCLIP cfg_context459.py (short side 448, no background threshold, the
# 336/112 window), except the evaluator's ignore_index: the released configs keep IoUMetric's default 255,
# which ignores the pixels of class 255 ('monkey' here) and counts predictions on unlabeled pixels; pass
# --cfg-options test_evaluator.ignore_index=255 to reproduce that.
dataset_type = 'PascalContext459Dataset'
# Relative to the working directory (the repository root): see data/README.md, or override
# with --cfg-options test_dataloader.dataset.data_root=/path/to/VOC2010
data_root = 'data/VOCdevkit/VOC2010'

test_pipeline = [
    # color_type='color' decodes grayscale, palette and RGBA images as 3-channel BGR.
    dict(type='LoadImageFromFile', color_type='color'),
    # Short side to 448 (long side at most 2048), aspect ratio kept.
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
    # After Resize, so the ground truth keeps its original size; 16-bit masks (class ids up to 458).
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
        data_prefix=dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/pc459_val'),
        ann_file='ImageSets/SegmentationContext/val.txt',
        pipeline=test_pipeline,
    ),
)
test_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'], ignore_index=65535)
