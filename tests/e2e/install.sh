#!/usr/bin/env bash
# install.sh apply|delete AGENT_IMAGE WEBHOOK_IMAGE [MODE]: `kubectl apply -k`
# (or delete -k) of the project with the images imported into the e2e node's
# containerd. The kustomization is written into bin/e2e/install/<MODE>:
#   builtin-certs (default): manifests/overlays/builtin-certs as it is;
#   interception: manifests/overlays/interception with the builtin-certs
#     component instead of cert-manager (whose controllers cannot be built here).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
verb=$1 agent=$2 webhook=$3 overlay=${4:-builtin-certs}
dir=$E2E_DIR/install/$overlay
mkdir -p "$dir"
m=$(realpath --relative-to="$dir" "$REPO/manifests")
case $overlay in
builtin-certs)
	base="resources:
  - $m/overlays/builtin-certs" ;;
interception)
	base="resources:
  - $m/settings
  - $m/webhook
  - $m/agent
components:
  - $m/components/builtin-certs
  - $m/components/interception
  - $m/components/cluster-settings
  - $m/components/fast-fallback" ;;
*) die "install.sh: unknown mode $overlay" ;;
esac
cat >"$dir/kustomization.yaml" <<K
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
$base
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
