"""The FUSE-free core: ``filesystem.Filesystem`` (lookup, list, open, read) over the
tree, ``resources.OpenResources`` (the resources kept open), and ``build.build``,
which makes a mount's parts from its ``FsConfig`` and wires them."""
