# syntax=docker/dockerfile:1
#
# A model image: one exported bundle placed in a model repository layout,
# /repository/<MODEL_NAME>/<MODEL_VERSION>/, on a small base that has `cp` (busybox), so that a
# Kubernetes initContainer can copy it into the pod's model volume (deploy/k8s) and the
# serve-with-model target of the root Dockerfile can bake it in. The build context is the bundle
# directory itself:
#   docker build -f deploy/model.Dockerfile \
#     --build-arg MODEL_NAME=cora-gcn --build-arg MODEL_VERSION=1 \
#     -t qgnn-model-cora-gcn:1 runs/demo/bundle
# MODEL_NAME and MODEL_VERSION must equal model.name and model.version in the bundle's
# manifest.json. Tag the image with the version and never move a tag: a new model version is a
# new tag, rolled out by changing the tag in the Deployment (docs/deploy.md).
FROM busybox:1.36
ARG MODEL_NAME
ARG MODEL_VERSION
COPY . /repository/${MODEL_NAME}/${MODEL_VERSION}/
RUN test -n "${MODEL_NAME}" && test -n "${MODEL_VERSION}" \
 && test -f "/repository/${MODEL_NAME}/${MODEL_VERSION}/manifest.json"
USER 10001:10001
