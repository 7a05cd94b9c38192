#!/usr/bin/env bash
# install.sh apply|delete AGENT_IMAGE WEBHOOK_IMAGE [OVERLAY]: `kubectl apply -k`
# (or delete -k) of a project overlay (default builtin-certs) with the images
# imported into the e2e node's containerd. The kustomization is written into
# bin/e2e/install/<overlay> and names the overlay as its only resource.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
verb=$1 agent=$2 webhook=$3 overlay=${4:-builtin-certs}
dir=$E2E_DIR/install/$overlay
mkdir -p "$dir"
rel=$(realpath --relative-to="$dir" "$REPO/manifests/overlays/$overlay")
cat >"$dir/kustomization.yaml" <<K
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel
images:
  - name: nodelocaldns/agent
    newName: ${agent%:*}
    newTag: ${agent##*:}
  - name: nodelocaldns/webhook
    newName: ${webhook%:*}
    newTag: ${webhook##*:}
K
if [ "$verb" = delete ]; then
	kc delete -k "$dir" --ignore-not-found --wait=true --timeout=120s
else
	kc apply -k "$dir"
fi
