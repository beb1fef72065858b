"""Offline checks of qgnn's deployment files against the serving contract.

    python deploy/validate.py                  # one line per problem; exit status 1 if any
    python deploy/validate.py --sync-prometheusrule

Needs PyYAML only: no cluster, Docker daemon or network. It renders the kustomizations itself (a
kustomize subset) and checks what Kubernetes' schemas cannot: ports, probes and security settings
against the contract, label selectors across objects, the shutdown timing, the compose stack's
wiring, the Dockerfile's sources against .dockerignore, and every PromQL metric and label against
the metric catalogue. With the kubernetes-validate package installed it also checks the built-in
kinds against the official JSON schemas that package bundles. The checks live in
deploy/qgnn_deploy; tests/deploy runs them. Deployment guide: docs/deploy.md.
"""

import sys

from qgnn_deploy.run import main

if __name__ == "__main__":
    sys.exit(main())
