{{/* Names, labels and the image: one place for each. */}}

{{- define "vipkeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vipkeeper.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else if contains (include "vipkeeper.name" .) .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "vipkeeper.name" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vipkeeper.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vipkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vipkeeper
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* selectorLabels: call with (dict "ctx" $ "component" "agent") */}}
{{- define "vipkeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vipkeeper.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vipkeeper.operator.fullname" -}}
{{- printf "%s-operator" (include "vipkeeper.fullname" .) -}}
{{- end -}}

{{- define "vipkeeper.agent.fullname" -}}
{{- printf "%s-agent" (include "vipkeeper.fullname" .) -}}
{{- end -}}

{{- define "vipkeeper.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "vipkeeper.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vipkeeper.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "vipkeeper.agent.fullname" .) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vipkeeper.peeringName" -}}
{{- default (include "vipkeeper.fullname" .) .Values.operator.peeringName -}}
{{- end -}}

{{- define "vipkeeper.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The agent switches to scriptUser for scripts: that takes SETUID/SETGID, granted only then. */}}
{{- define "vipkeeper.agent.switchesUser" -}}
{{- if and .Values.agent.scripts (ne .Values.agent.scriptUser "root") -}}true{{- end -}}
{{- end -}}
