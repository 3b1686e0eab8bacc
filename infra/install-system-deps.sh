#!/usr/bin/env bash
# Installs the Debian packages Marquee runs beside its Python code: kcat (a non-Python
# Kafka client used to cross-check the broker), redis-server (Feast's optional online
# store), prometheus (metrics), Node.js with npm (for s3rver, the embedded broker's
# durable storage; see infra/install-s3rver.sh) and iproute2 (`ip`, which makes the network
# namespaces of the multi-host tests, infra/netns.py) and haproxy (the ranking service's
# admission front, infra/front.py). Idempotent: does nothing when all are present.
set -euo pipefail
need=()
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-system-deps: need root (or sudo) to install: ${need[*]}" >&2
    echo "  run: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
echo "install-system-deps: installing ${need[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
# Debian starts these as services when a service manager runs; Marquee starts its own.
for svc in prometheus redis-server haproxy; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
