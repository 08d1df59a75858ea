"""fsa-seg: FSA (ICCV 2025) for training-free open-vocabulary segmentation, as an MMSegmentation plugin.

Inside an environment that has torch, torchvision and mmcv (with its compiled ops, which mmseg needs):
``pip install -e .`` installs the rest; ``pip install -e ".[sam3]"`` adds what SAM3 needs (transformers);
``pip install -e ".[tests]"`` what the test suite needs; ``pip install -e ".[explore]"`` the explorer page
(``tools/explore.py``: gradio). ``bash tools/install.sh`` builds the whole
environment from scratch with the pinned versions of requirements.txt.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch>=2.1",
    "torchvision",
    "numpy",
    "Pillow",
    "mmcv>=2.0.0,<2.2.0",        # mmseg 1.2 accepts these; built with its ops (mmseg imports mmcv.ops)
    "mmengine>=0.10,<1.0",
    "mmsegmentation>=1.2,<1.3",
    "open_clip_torch>=2.24",
    "timm>=1.0",
    "huggingface_hub",            # its offline switch (fsa_seg.weights); open_clip and timm download through it
    "segment-anything>=1.0",
    "ftfy",
    "regex",
    "scipy",                      # PASCAL-Context's .mat labels (converter)
    "matplotlib",                 # sweep plots, demo overlay
    "prettytable",                # per-class table (mmseg's metric)
]
EXTRAS_REQUIRE = {
    "sam3": ["transformers>=5.0,<6"],
    # The test suite, and what Meta's reference SAM3 code imports (the SAM3 parity test; that code, the
    # `sam3` package, is installed with `pip install --no-deps sam3==0.1.4`: its numpy<2.4 pin is not needed).
    # tools/explore.py's local page
    "explore": ["gradio>=4.0"],
    "tests": ["pytest", "transformers>=5.0,<6", "iopath", "portalocker", "psutil", "pycocotools", "einops"],
}

setup(
    name="fsa-seg",
    version="0.1.0",
    license="Apache-2.0",
    description="Feedback-driven Self-adaptive Attention (FSA, ICCV 2025) for training-free "
    "open-vocabulary segmentation, as an MMSegmentation plugin.",
    packages=find_packages(include=["fsa_seg", "fsa_seg.*"]),
    # The configs ship inside the package (fsa_seg/.mim/configs links to configs/ in a checkout; the wheel
    # holds a copy), so a plain ``pip install .`` runs tools/test.py and the Python API.
    package_data={"fsa_seg": ["resources/class_names/*.txt", "resources/model_configs/*.json",
                              ".mim/configs/*.py", ".mim/configs/**/*.py"]},
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
