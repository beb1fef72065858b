"""The KServe model repository extension (RepositoryIndex, RepositoryModelLoad,
RepositoryModelUnload) mapped onto qgnn's repository, as tritonclient's
``get_model_repository_index``, ``load_model`` and ``unload_model`` call it.

* RepositoryIndex lists every model version the server holds, with its state (READY,
  LOADING, UNLOADING, or UNAVAILABLE for a failed load, whose error is the reason).
* RepositoryModelLoad (re)loads a model by name: versions already loaded are reloaded from
  their bundles (the load check runs; on failure the old version keeps serving), and when PATH
  is a repository, ``<PATH>/<name>/<version>`` bundles not yet loaded are loaded. Bundles are
  served as written: the ``config`` and ``file:`` overrides of Triton are refused.
* RepositoryModelUnload unloads every version of the model (in-flight calls finish first).

These are the same operations as qgnn.v1 ModelAdmin, with the same reach: a deployment
restricts who may call them with the bearer token. With ``--poll-interval-s`` the files under
PATH stay the source of truth, so a model unloaded this way comes back at the next scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qgnn.runtime import validation
from qgnn.runtime.discovery import discover, is_bundle
from qgnn.runtime.errors import InvalidRequestError, ModelNotFoundError
from qgnn.runtime.messages import ModelSelector
from qgnn.runtime.model_entry import ModelState
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.repository import ModelRepository

_STATES = {ModelState.READY: "READY", ModelState.LOADING: "LOADING",
           ModelState.UNLOADING: "UNLOADING", ModelState.FAILED: "UNAVAILABLE"}


def repository_index(repo: ModelRepository, ready: bool) -> kserve.RepositoryIndexResponse:
    """Every version the repository holds (only READY ones with ``ready``)."""
    index = kserve.RepositoryIndexResponse.ModelIndex
    return kserve.RepositoryIndexResponse(models=[
        index(name=e.name, version=str(e.version), state=_STATES[e.state], reason=e.error)
        for e in repo.entries() if not ready or e.state is ModelState.READY])


def load_model(repo: ModelRepository, name: str, parameters: Mapping[str, Any]) -> None:
    """Reloads the loaded versions of ``name`` and loads its bundles under PATH that are not
    loaded yet; NOT_FOUND when there is neither."""
    name = validation.model_name(name, "model_name")
    for key in parameters:
        if key == "config" or key.startswith("file:"):
            raise InvalidRequestError(f"parameters[{validation.clip(key)!r}]", "override",
                                      "qgnn serves bundles as they are written; write a new "
                                      "bundle version instead of overriding its config or "
                                      "files")
    loaded = {e.version: e for e in repo.entries(name)}
    on_disk = {}
    if repo.root is not None and not is_bundle(repo.root) and repo.root.is_dir():
        on_disk = {expect[1]: path for path, expect in discover(repo.root).items()
                   if expect is not None and expect[0] == name}
    if not loaded and not on_disk:
        raise ModelNotFoundError(f"no model named {name!r} is loaded or found under the "
                                 f"server's PATH")
    for version in sorted(set(loaded) | set(on_disk)):
        if version in loaded and loaded[version].state is not ModelState.FAILED:
            repo.reload(ModelSelector(name, version))
        elif version in on_disk:
            repo.load(on_disk[version], managed=True, expect=(name, version))
        else:
            repo.reload(ModelSelector(name, version))


def unload_model(repo: ModelRepository, name: str) -> None:
    """Unloads every version of ``name`` (NOT_FOUND if none is loaded)."""
    repo.unload(ModelSelector(validation.model_name(name, "model_name"), None))
