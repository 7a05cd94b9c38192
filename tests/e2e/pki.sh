#!/usr/bin/env bash
# pki.sh DIR NODE_NAME NODE_IP: the e2e node's CA, serving and client
# certificates (openssl), service-account keys and kubeconfigs.
set -euo pipefail
dir=$1 node=$2 ip=$3
cd "$dir"
openssl genrsa -out ca.key 2048
openssl req -x509 -new -key ca.key -subj "/CN=nodelocaldns-e2e-ca" -days 7 -out ca.crt
# cert NAME SUBJECT [SANS [USAGE]]: a key and a certificate signed by the CA.
cert() {
	openssl genrsa -out "$1.key" 2048
	openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
	if [ -n "${3:-}" ]; then
		printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "${4:-serverAuth}" >"$1.ext"
	else
		printf 'extendedKeyUsage=clientAuth\n' >"$1.ext"
	fi
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 -extfile "$1.ext" -out "$1.crt"
}
cert apiserver "/CN=kube-apiserver" "IP:$ip,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:$node,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=nodelocaldns-e2e-admin"
cert kubelet-client "/O=system:nodes/CN=system:node:$node"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert kubelet-serving "/CN=$node" "IP:$ip,IP:127.0.0.1,DNS:$node,DNS:localhost"
openssl genrsa -out sa.key 2048
openssl rsa -in sa.key -pubout -out sa.pub
# kubeconfig FILE USER CERT: a kubeconfig for the API server on the node IP.
kubeconfig() {
	cat >"$1" <<K
apiVersion: v1
kind: Config
clusters:
- name: nlde2e
  cluster:
    server: https://$ip:6443
    certificate-authority: $dir/ca.crt
users:
- name: $2
  user:
    client-certificate: $dir/$3.crt
    client-key: $dir/$3.key
contexts:
- name: nlde2e
  context: {cluster: nlde2e, user: $2}
current-context: nlde2e
K
}
kubeconfig admin.kubeconfig admin admin
kubeconfig kubelet.kubeconfig "system:node:$node" kubelet-client
