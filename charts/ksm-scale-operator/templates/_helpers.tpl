{{/*
The chart's name, overridable with nameOverride.
*/}}
{{- define "ksm-scale-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release name, with the chart name unless the release name
contains it. Names of cluster-scoped objects start with it; with a release
named ksm-scale-operator every name equals that of config/default.
*/}}
{{- define "ksm-scale-operator.fullname" -}}
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

{{- define "ksm-scale-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object; the operator's Deployment, pods and Service add
app.kubernetes.io/component: manager, the monitoring objects "monitoring".
*/}}
{{- define "ksm-scale-operator.labels" -}}
helm.sh/chart: {{ include "ksm-scale-operator.chart" . }}
app.kubernetes.io/name: {{ include "ksm-scale-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ksm-scale-operator
{{- with .Values.customLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the operator's pods. app.kubernetes.io/component: manager
is what the operator ServiceMonitor of config/prometheus selects as well.
*/}}
{{- define "ksm-scale-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ksm-scale-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end }}

{{- define "ksm-scale-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ksm-scale-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The read-only ClusterRole kube-state-metrics runs with (--ksm-cluster-role).
Its name is in three places that must agree: the role itself, the resourceNames
of the operator's "bind" rule, and the admission policy.
*/}}
{{- define "ksm-scale-operator.ksmClusterRole" -}}
{{- printf "%s-kube-state-metrics" (include "ksm-scale-operator.fullname" .) }}
{{- end }}

{{/*
The name config/ gives that role, as it appears in the files copied from
config/ (files/rbac/role.yaml, files/admission/bind-check.yaml).
*/}}
{{- define "ksm-scale-operator.configKSMClusterRole" -}}
ksm-scale-operator-kube-state-metrics
{{- end }}

{{- define "ksm-scale-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- $ref := printf "%s:%s" .Values.image.repository $tag }}
{{- if .Values.image.registry }}
{{- $ref = printf "%s/%s" .Values.image.registry $ref }}
{{- end }}
{{- if .Values.image.sha }}
{{- $ref = printf "%s@%s" $ref .Values.image.sha }}
{{- end }}
{{- $ref }}
{{- end }}

{{/*
The object of kind $kind in a multi-document file under files/, as a dict:
  include "ksm-scale-operator.fileObject" (list $ "rbac/metrics_auth_role.yaml" "ClusterRole") | fromYaml
*/}}
{{- define "ksm-scale-operator.fileObject" -}}
{{- $root := index . 0 }}
{{- $path := printf "files/%s" (index . 1) }}
{{- $kind := index . 2 }}
{{- $content := $root.Files.Get $path }}
{{- if not $content }}
{{- fail (printf "%s is missing from the chart: run make chart" $path) }}
{{- end }}
{{- $found := dict }}
{{- range $doc := regexSplit "(?m)^---\\s*$" $content -1 }}
{{- $obj := fromYaml $doc }}
{{- if and $obj (eq (get $obj "kind") $kind) }}
{{- $found = $obj }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "%s has no %s" $path $kind) }}
{{- end }}
{{- toYaml $found }}
{{- end }}

{{/*
The base every runbook_url in files/prometheus/prometheusrule.yaml starts
with; runbookUrl replaces it.
*/}}
{{- define "ksm-scale-operator.runbookBase" -}}
https://github.com/ksmscale/ksm-scale-operator/blob/main/docs/runbooks.md
{{- end }}
