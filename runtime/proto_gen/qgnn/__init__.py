"""Stubs of the qgnn protocol packages."""
