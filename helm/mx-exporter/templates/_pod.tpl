{{/* The pod template shared by the Deployment (shards <= 1) and the StatefulSet (shards > 1). */}}
{{- define "mx-exporter.podTemplate" -}}
metadata:
  labels:
    {{- include "mx-exporter.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed setting rolls the pods (the exporter also reloads on SIGHUP or POST /-/reload).
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- if and .Values.webConfig.enabled (not .Values.webConfig.existingSecret) }}
    checksum/web-config: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "mx-exporter.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: mx-exporter
      image: {{ include "mx-exporter.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --config.file={{ include "mx-exporter.configMountPath" . }}/config.yml
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- if or (include "mx-exporter.sharded" .) .Values.extraEnv }}
      env:
        {{- if include "mx-exporter.sharded" . }}
        # Shard index = the pod's ordinal (mx-exporter-0, -1, ...), set by the StatefulSet controller.
        - name: MX_EXPORTER_SHARD__INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        - name: MX_EXPORTER_SHARD__COUNT
          value: {{ .Values.shards | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.service.port }}
          protocol: TCP
      livenessProbe:
        {{- include "mx-exporter.kubeletProbe" (dict "path" "/-/healthy" "ctx" .) | nindent 8 }}
        {{- with .Values.livenessProbe }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      readinessProbe:
        {{- include "mx-exporter.kubeletProbe" (dict "path" "/-/ready" "ctx" .) | nindent 8 }}
        {{- with .Values.readinessProbe }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ include "mx-exporter.configMountPath" . }}
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if .Values.webConfig.enabled }}
        - name: web-config
          mountPath: {{ include "mx-exporter.webConfigMountPath" . }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "mx-exporter.fullname" . }}
    # The root file system is read-only; /tmp is the one writable place.
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
    {{- if .Values.webConfig.enabled }}
    - name: web-config
      secret:
        secretName: {{ include "mx-exporter.webConfigSecretName" . }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
