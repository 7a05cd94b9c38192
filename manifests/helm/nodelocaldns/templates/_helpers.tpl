{{/*
Labels of every object: the kustomize tree's app.kubernetes.io/name and
component, plus Helm's own (tests/helm ignores the Helm ones when it compares
the chart with the kustomize install). Call with (list $ "component"); an
empty component leaves the label out.
*/}}
{{- define "nodelocaldns.labels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: node-local-dns
{{- with index . 1 }}
app.kubernetes.io/component: {{ . }}
{{- end }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end -}}

{{/* An image reference from a values entry (repository, tag). */}}
{{- define "nodelocaldns.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{/* imagePullPolicy and pod-level pull secrets, when set. */}}
{{- define "nodelocaldns.pullPolicy" -}}
{{- if .pullPolicy }}
imagePullPolicy: {{ .pullPolicy }}
{{- end }}
{{- end -}}

{{- define "nodelocaldns.pullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The agent's -localip: the local addresses, plus the kube-dns IP in interception mode. */}}
{{- define "nodelocaldns.agentLocalIP" -}}
{{- $ips := .Values.localDNSIPs -}}
{{- if eq .Values.mode "interception" -}}
{{- $ips = append $ips .Values.kubeDNS.ip -}}
{{- end -}}
{{ join "," $ips }}
{{- end -}}

{{/*
The Corefile template (node-cache's dialect): with the default values it is
byte for byte manifests/agent/configmap.yaml's (and, in cilium mode,
manifests/components/cilium's).
*/}}
{{- define "nodelocaldns.corefile" -}}
{{- if .Values.agent.corefile.override -}}
{{ .Values.agent.corefile.override }}
{{- else -}}
{{- $c := .Values.agent.corefile.cache -}}
{{- $cilium := eq .Values.mode "cilium" -}}
{{- $bind := "bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__" -}}
{{- $health := "__PILLAR__LOCAL__DNS__" -}}
{{- /* The node's own IP under hostNetwork (the agent expands {$POD_IP}). */ -}}
{{- $prometheus := "prometheus {$POD_IP}:9253" -}}
{{- if $cilium -}}
{{- $bind = "bind 0.0.0.0" -}}
{{- $health = "" -}}
{{- $prometheus = "prometheus :9253" -}}
{{- end -}}
{{- $opts := list -}}
{{- with $c.serveStale }}{{ $opts = append $opts (printf "serve_stale %v" .) }}{{ end -}}
{{- with $c.prefetch }}{{ $opts = append $opts (printf "prefetch %v" .) }}{{ end -}}
{{ .Values.clusterDomain }}:53 {
    errors
    cache {
        success {{ $c.success.capacity }} {{ $c.success.ttl }}
        denial {{ $c.denial.capacity }} {{ $c.denial.ttl }}
{{- range $opts }}
        {{ . }}
{{- end }}
    }
    reload
    loop
    {{ $bind }}
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
    {{ $prometheus }}
    health {{ $health }}:8080
    ready {{ $health }}:8181
}
{{- range $zone := list "in-addr.arpa" "ip6.arpa" "." }}
{{ $zone }}:53 {
    errors
{{- if $opts }}
    cache {{ $c.ttl }} {
{{- range $opts }}
        {{ . }}
{{- end }}
    }
{{- else }}
    cache {{ $c.ttl }}
{{- end }}
    reload
    loop
    {{ $bind }}
{{- if eq $zone "." }}
    forward . __PILLAR__UPSTREAM__SERVERS__
{{- else }}
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
{{- end }}
    {{ $prometheus }}
}
{{- end }}
{{- with .Values.agent.corefile.extraServerBlocks }}
{{ . | trim }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Checks of values that would render a broken install. */}}
{{- define "nodelocaldns.validate" -}}
{{- if not (has .Values.mode (list "injection" "interception" "cilium")) -}}
{{- fail (printf "mode %q: want injection, interception or cilium" .Values.mode) -}}
{{- end -}}
{{- if not (has .Values.webhook.certificates (list "cert-manager" "builtin")) -}}
{{- fail (printf "webhook.certificates %q: want cert-manager or builtin" .Values.webhook.certificates) -}}
{{- end -}}
{{- if not (has .Values.webhook.namespaceSelection (list "opt-in" "cluster-wide")) -}}
{{- fail (printf "webhook.namespaceSelection %q: want opt-in or cluster-wide" .Values.webhook.namespaceSelection) -}}
{{- end -}}
{{- if or (lt (len .Values.localDNSIPs) 1) (gt (len .Values.localDNSIPs) 2) -}}
{{- fail "localDNSIPs: want one or two addresses" -}}
{{- end -}}
{{- if not (regexMatch "^[^/]+/[^/]+$" .Values.kubeDNS.service) -}}
{{- fail (printf "kubeDNS.service %q: want namespace/name" .Values.kubeDNS.service) -}}
{{- end -}}
{{- end -}}
