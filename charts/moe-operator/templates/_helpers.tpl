{{- define "moe-operator.name" -}}moe-operator{{- end -}}
{{- define "moe-operator.fullname" -}}
{{- if contains "moe-operator" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-moe-operator" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- define "moe-operator.labels" -}}
app.kubernetes.io/name: moe-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "moe-operator.selectorLabels" -}}
app.kubernetes.io/name: moe-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "moe-operator.webhookService" -}}{{ include "moe-operator.fullname" . }}-webhook{{- end -}}
{{- define "moe-operator.certSecret" -}}{{ include "moe-operator.fullname" . }}-webhook-cert{{- end -}}
