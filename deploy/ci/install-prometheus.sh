#!/usr/bin/env bash
# Installs promtool and prometheus (Debian/Ubuntu package "prometheus") for the deploy tests:
# tests/deploy/test_deploy_prometheus_rules.py and tests/integration/test_prometheus_scrape.py.
# Never fatal: without apt-get, without root, or when the install fails it says why and exits 0,
# and those tests skip. On a host running systemd the package's service is stopped and disabled
# again, so nothing keeps listening on :9090.
set -uo pipefail

say() { echo "install-prometheus: $*" >&2; }

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  say "already installed: $(command -v promtool), $(command -v prometheus)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "apt-get not available; skipping (the promtool tests will skip)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "not root; skipping (the promtool tests will skip)"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
  say "apt-get update failed; skipping"
  exit 0
fi
if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
  say "apt-get install prometheus failed; skipping"
  exit 0
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if command -v promtool >/dev/null 2>&1; then
  say "installed: $(command -v promtool) ($(promtool --version 2>&1 | head -n 1))"
else
  say "the prometheus package put no promtool on PATH; the promtool tests will skip"
fi
exit 0
