"""The model bundle: a verified directory (or ``.qgnn`` tar archive) an exported model ships in.

A bundle holds ``manifest.json`` plus the files it lists (ONNX models, ``.npy`` arrays, JSON), each
with its size and SHA-256, so a server can refuse anything truncated, altered, unlisted or needing
unpickling before it serves a byte of it. Arrays are plain ``.npy`` so the server memory-maps them.
Torch-free: this package is part of ``qgnn.runtime``. Format reference: docs/bundle-format.md.

One module per job, imported from where they live (this package re-exports nothing):

* :mod:`.layout`: file names inside a bundle, allowed file kinds, path and ``.npy`` checks.
* :mod:`.manifest`: the manifest schema (:func:`check_manifest`) and the typed
  :class:`Manifest` a reader parses it into.
* :mod:`.writer`: :func:`write_bundle` and :func:`write_archive` (the exporter's side).
* :mod:`.reader`: :func:`load_bundle` and :class:`Bundle` (the server's side).
"""
