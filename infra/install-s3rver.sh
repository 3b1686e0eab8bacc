#!/usr/bin/env bash
# Installs s3rver, the S3-compatible server under the embedded broker's durable storage
# (infra/object_store.py), from npm into PREFIX (default .venv/s3rver). Idempotent: does
# nothing when the pinned version is already there. Node.js and npm come from
# infra/install-system-deps.sh.
set -euo pipefail
VERSION=3.7.1
prefix="${1:-.venv/s3rver}"
manifest="$prefix/node_modules/s3rver/package.json"
if [ -f "$manifest" ] && grep -q "\"version\": \"$VERSION\"" "$manifest"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install-s3rver: npm is missing; run infra/install-system-deps.sh (apt-get install nodejs npm)" >&2
  exit 1
fi
echo "install-s3rver: installing s3rver@$VERSION into $prefix"
mkdir -p "$prefix"
npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error "s3rver@$VERSION"
