{{/* Names, labels, the configuration file and the RBAC facts derived from it. */}}

{{- define "kubelet-csr-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: names every object of the release. */}}
{{- define "kubelet-csr-controller.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The namespace of every namespaced object but the Events Role's. */}}
{{- define "kubelet-csr-controller.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubelet-csr-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubelet-csr-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubelet-csr-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubelet-csr-controller.labels" -}}
helm.sh/chart: {{ include "kubelet-csr-controller.chart" . }}
{{ include "kubelet-csr-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: kubelet-csr-controller
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
An object's metadata annotations: commonAnnotations, then the object's own
(which win), as a line "annotations:" and its map, indented for metadata, or
nothing. Call with (list . $own) right after the labels.
*/}}
{{- define "kubelet-csr-controller.annotations" -}}
{{- $root := index . 0 }}
{{- $all := merge (deepCopy (index . 1 | default dict)) ($root.Values.commonAnnotations | default dict) }}
{{- with $all }}
{{- printf "\n  annotations:" }}
{{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{/*
The image: registry/repository, then @digest or :tag. global.imageRegistry
replaces the registry of image.repository (its first component, when that
names a host as Docker reads it: a dot, a port or localhost), or goes in
front of a repository that names none.
*/}}
{{- define "kubelet-csr-controller.image" -}}
{{- $repo := .Values.image.repository }}
{{- with (.Values.global | default dict).imageRegistry }}
{{- $parts := splitList "/" $repo }}
{{- $first := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq "localhost" $first)) }}
{{- $repo = rest $parts | join "/" }}
{{- end }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "kubelet-csr-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubelet-csr-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the CA Secret and the ConfigMap are mounted. */}}
{{- define "kubelet-csr-controller.caDir" -}}/etc/kubelet-csr-controller/ca{{- end }}
{{- define "kubelet-csr-controller.configDir" -}}/etc/kubelet-csr-controller/config{{- end }}

{{/*
The configuration, as a YAML map: .Values.config with the CA Secret's mount
as the top-level ca unless the user gave one.
*/}}
{{- define "kubelet-csr-controller.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- if include "kubelet-csr-controller.mountsCA" . }}
{{- $dir := include "kubelet-csr-controller.caDir" . }}
{{- $_ := set $cfg "ca" (dict "certFile" (printf "%s/tls.crt" $dir) "keyFile" (printf "%s/tls.key" $dir)) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Whether the ca.existingSecret is mounted: some signer issues certificates
with the top-level CA and config.ca does not name other files. An
approve-only install (config.signers: []) mounts no CA at all.
*/}}
{{- define "kubelet-csr-controller.mountsCA" -}}
{{- $cfg := .Values.config | default dict }}
{{- if not $cfg.ca }}
{{- if hasKey $cfg "signers" }}
{{- range $cfg.signers }}{{ if not .ca }}true{{ end }}{{ end }}
{{- else }}true
{{- end }}
{{- end }}
{{- end }}

{{/*
RBAC facts. Each default below is the controller's own default for a field
the configuration leaves out, so that the ClusterRole grants exactly what the
controller will do. Lists are returned as JSON (use fromJsonArray).
*/}}

{{/* The kubelet signers whose CSRs the approver decides. */}}
{{- define "kubelet-csr-controller.approvedSigners" -}}
{{- $cfg := .Values.config | default dict }}
{{- $names := list }}
{{- if dig "approver" "nodeClient" "enabled" true $cfg }}
{{- $names = append $names "kubernetes.io/kube-apiserver-client-kubelet" }}
{{- end }}
{{- if dig "approver" "kubeletServing" "enabled" true $cfg }}
{{- $names = append $names "kubernetes.io/kubelet-serving" }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* Whether approvals are written: dryRun decides but writes nothing. */}}
{{- define "kubelet-csr-controller.writesApprovals" -}}
{{- $cfg := .Values.config | default dict }}
{{- if and (include "kubelet-csr-controller.approvedSigners" . | fromJsonArray) (ne (dig "approver" "mode" "enforce" $cfg) "dryRun") }}true{{ end }}
{{- end }}

{{/* The signers that issue certificates: config.signers, or the default two. */}}
{{- define "kubelet-csr-controller.signerNames" -}}
{{- $cfg := .Values.config | default dict }}
{{- $names := list "kubernetes.io/kubelet-serving" "kubernetes.io/kube-apiserver-client-kubelet" }}
{{- if hasKey $cfg "signers" }}
{{- $names = list }}
{{- range $cfg.signers }}
{{- $names = append $names .name }}
{{- end }}
{{- end }}
{{- toJson ($names | uniq) }}
{{- end }}

{{/*
The trust bundles the controller publishes, as JSON objects {signer, bundle,
configMapNamespace, configMapName}: each signer with trustBundle.enabled
(default: kubernetes.io/kubelet-serving only), named as config/defaults.go
and signer/trust.go name them.
*/}}
{{- define "kubelet-csr-controller.trustBundles" -}}
{{- $cfg := .Values.config | default dict }}
{{- $signers := list (dict "name" "kubernetes.io/kubelet-serving") (dict "name" "kubernetes.io/kube-apiserver-client-kubelet") }}
{{- if hasKey $cfg "signers" }}{{ $signers = $cfg.signers }}{{ end }}
{{- $out := list }}
{{- range $signers }}
{{- $tb := .trustBundle | default dict }}
{{- if dig "enabled" (eq .name "kubernetes.io/kubelet-serving") $tb }}
{{- $b := dict "signer" .name "bundle" (printf "%s:%s" (replace "/" ":" .name) ($tb.name | default "kubelet-csr-controller")) }}
{{- with $tb.configMap }}
{{- $_ := set $b "configMapNamespace" .namespace }}
{{- $_ := set $b "configMapName" (.name | default (printf "%s-ca" (index (splitList "/" $b.signer) 1))) }}
{{- end }}
{{- $out = append $out $b }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Whether the approver reads Nodes: serving CSRs are checked against their
Node's addresses, and with allowExistingNode false a bootstrap client CSR is
checked against the registered Nodes (controllers/approver_controller.go
watches Nodes on exactly these conditions).
*/}}
{{- define "kubelet-csr-controller.readsNodes" -}}
{{- $cfg := .Values.config | default dict }}
{{- $serving := dig "approver" "kubeletServing" "enabled" true $cfg }}
{{- $client := dig "approver" "nodeClient" "enabled" true $cfg }}
{{- $existing := dig "approver" "nodeClient" "bootstrap" "allowExistingNode" true $cfg }}
{{- $audit := dig "audit" "enabled" false $cfg }}
{{- if or $serving (and $client (not $existing)) (include "kubelet-csr-controller.startupTaint" .) $audit }}true{{ end }}
{{- end }}

{{/* "true" when config.approver.kubeletServing.startupTaint is set. */}}
{{- define "kubelet-csr-controller.startupTaint" -}}
{{- if dig "approver" "kubeletServing" "startupTaint" "" (.Values.config | default dict) }}true{{ end }}
{{- end }}

{{- define "kubelet-csr-controller.leaseName" -}}
{{- dig "manager" "leaderElection" "leaseName" "kubelet-csr-controller" (.Values.config | default dict) }}
{{- end }}

{{/*
One alert of the PrometheusRule: its for and severity from
prometheusRule.alerts.<name>, a runbook_url to its section of
docs/runbooks.md. Call with (dict "root" $ "name" ... "expr" ... "summary"
... "description" ...).
*/}}
{{- define "kubelet-csr-controller.alert" -}}
{{- $v := index .root.Values.prometheusRule.alerts .name -}}
- alert: {{ .name }}
  expr: {{ .expr | quote }}
  for: {{ $v.for }}
  labels:
    severity: {{ $v.severity }}
  annotations:
    summary: {{ .summary | quote }}
    description: {{ .description | quote }}
    runbook_url: {{ printf "%s#%s" .root.Values.prometheusRule.runbookURL (lower .name) | quote }}
{{- end }}

{{/*
The annotations of a helm test object: the hook, its weight (the
ServiceAccount and its rights before the Pod), recreated at each run and
deleted when it passes; then commonAnnotations. Call with (list . "weight").
*/}}
{{/*
The labels of the helm test objects: the release's, under another name, so
that no selector of the release (Deployment, Service, PodDisruptionBudget)
takes the test Pod for a replica.
*/}}
{{- define "kubelet-csr-controller.testLabels" -}}
{{- $l := include "kubelet-csr-controller.labels" . | fromYaml }}
{{- $_ := set $l "app.kubernetes.io/name" (printf "%s-test" (include "kubelet-csr-controller.name" .) | trunc 63) }}
{{- $_ = set $l "app.kubernetes.io/component" "test" }}
{{- toYaml $l }}
{{- end }}

{{- define "kubelet-csr-controller.testHook" -}}
helm.sh/hook: test
helm.sh/hook-weight: {{ index . 1 | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- with (index . 0).Values.commonAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Fails rendering on combinations the schema cannot express. */}}
{{- define "kubelet-csr-controller.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: every replica would approve and sign the same CSRs at once. Set leaderElection.enabled=true, or replicaCount=1." (int .Values.replicaCount)) }}
{{- end }}
{{- if and (include "kubelet-csr-controller.mountsCA" .) (not .Values.ca.existingSecret) }}
{{- fail "ca.existingSecret is empty: name the Secret (keys tls.crt and tls.key) that holds the CA the controller signs with, or install approve-only with config.signers: [] (managed clusters, where kube-controller-manager or the provider signs)." }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.enabled) }}
{{- fail "serviceMonitor.enabled needs service.enabled: the ServiceMonitor scrapes the metrics Service." }}
{{- end }}
{{- end }}
