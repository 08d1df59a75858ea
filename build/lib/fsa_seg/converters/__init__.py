"""Dataset converters: each benchmark's public download -> the layout its dataset config reads.

One module per benchmark family with a ``main(argv)`` command line (``tools/dataset_converters/<name>.py``
runs it); :mod:`.common` holds the shared helpers. Only numpy, Pillow and scipy are used (no mmcv), and
errors are one-line ``SystemExit`` messages.
"""
