{{/* Names, labels and the small computed values every template shares. */}}

{{- define "mx-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mx-exporter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mx-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mx-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mx-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mx-exporter.labels" -}}
helm.sh/chart: {{ include "mx-exporter.chart" . }}
{{ include "mx-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mx-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mx-exporter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mx-exporter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* More than one shard runs a StatefulSet, each pod watching the domains whose hash % shards == its index. */}}
{{- define "mx-exporter.sharded" -}}
{{- if gt (int .Values.shards) 1 -}}true{{- end -}}
{{- end -}}

{{- define "mx-exporter.webConfigSecretName" -}}
{{- default (printf "%s-web-config" (include "mx-exporter.fullname" .)) .Values.webConfig.existingSecret -}}
{{- end -}}

{{/* The scheme kubelet probes and Prometheus use: HTTPS once the web config turns TLS on. */}}
{{- define "mx-exporter.scheme" -}}
{{- if .Values.webConfig.enabled -}}{{ .Values.webConfig.scheme }}{{- else -}}HTTP{{- end -}}
{{- end -}}

{{- define "mx-exporter.configMountPath" -}}/etc/mx-exporter{{- end -}}
{{- define "mx-exporter.webConfigMountPath" -}}/etc/mx-exporter-web{{- end -}}

{{/*
How the kubelet checks the pod. The exporter asks for basic auth on every endpoint, /-/healthy and /-/ready too,
so with basic_auth_users the check must be a TCP connect (webConfig.kubeletProbes: tcpSocket).
*/}}
{{- define "mx-exporter.kubeletProbe" -}}
{{- $web := .ctx.Values.webConfig -}}
{{- if and $web.enabled (eq $web.kubeletProbes "tcpSocket") -}}
tcpSocket:
  port: http
{{- else -}}
{{- if and $web.enabled $web.config.basic_auth_users -}}
{{- fail "webConfig.config.basic_auth_users makes /-/healthy and /-/ready answer 401 to the kubelet: set webConfig.kubeletProbes: tcpSocket" -}}
{{- end -}}
httpGet:
  path: {{ .path }}
  port: http
  scheme: {{ include "mx-exporter.scheme" .ctx }}
{{- end -}}
{{- end -}}
