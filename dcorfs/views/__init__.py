"""File formats and the tree of a mount, knowing nothing of DCOR.

``view``: byte-exact file contents (``.npy`` over rows, text, passthrough);
``npy_format``: the ``.npy`` header; ``tsv`` and ``tiff``: the text and image views
over ``.npy`` views; ``tables``: row tables as structured arrays; ``nodes``: the
folders, files and links a mount is made of, made on first use.
"""
