{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "mesh-admission.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the Service name, and so part of the webhook names and the certificate DNS names.
The release name alone when it already contains the chart name (`helm install mesh-admission ...`).
*/}}
{{- define "mesh-admission.fullname" -}}
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

{{- define "mesh-admission.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "mesh-admission.labels" -}}
helm.sh/chart: {{ include "mesh-admission.chart" . }}
{{ include "mesh-admission.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the server pods (Deployment, Service, PodDisruptionBudget, anti-affinity). */}}
{{- define "mesh-admission.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mesh-admission.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mesh-admission.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mesh-admission.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mesh-admission.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Excluded namespaces as a JSON list: the configured ones in order, then the release namespace unless listed.
*/}}
{{- define "mesh-admission.excludedNamespaces" -}}
{{- $list := list }}
{{- range (.Values.config.excludedNamespaces | default list) }}
{{- $list = append $list (toString .) }}
{{- end }}
{{- if not (has .Release.Namespace $list) }}
{{- $list = append $list .Release.Namespace }}
{{- end }}
{{- toJson $list }}
{{- end }}

{{/* Namespaces the validating webhook never sees: the release namespace and kube-system, each once. */}}
{{- define "mesh-admission.validationExcludedNamespaces" -}}
{{- toJson (list .Release.Namespace "kube-system" | uniq) }}
{{- end }}

{{/* Name of the Secret holding tls.crt and tls.key; fails clearly when secret mode lacks it. */}}
{{- define "mesh-admission.tlsSecretName" -}}
{{- include "mesh-admission.checkCertificates" . }}
{{- if eq .Values.certificates.mode "certManager" }}
{{- printf "%s-tls" (include "mesh-admission.fullname" .) }}
{{- else }}
{{- .Values.certificates.secret.name }}
{{- end }}
{{- end }}

{{/* Validates the certificates block; renders nothing. */}}
{{- define "mesh-admission.checkCertificates" -}}
{{- $mode := .Values.certificates.mode }}
{{- if not (has $mode (list "certManager" "secret")) }}
{{- fail (printf "certificates.mode must be \"certManager\" or \"secret\", not %q" (toString $mode)) }}
{{- end }}
{{- if eq $mode "secret" }}
{{- if not .Values.certificates.secret.name }}
{{- fail "certificates.mode=secret needs certificates.secret.name: the name of a kubernetes.io/tls Secret (tls.crt, tls.key) in the release namespace. Create one with `mesh-admission certs --service SERVICE --namespace NS --out certs/` and `kubectl -n NS create secret tls NAME --cert certs/tls.crt --key certs/tls.key`, or use certificates.mode=certManager." }}
{{- end }}
{{- if not .Values.certificates.secret.caBundle }}
{{- fail "certificates.mode=secret needs certificates.secret.caBundle: the base64-encoded PEM of the CA that signed the serving certificate, e.g. --set certificates.secret.caBundle=$(base64 -w0 certs/ca.crt)" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The caBundle of the webhook configurations in secret mode: base64 of the CA PEM. */}}
{{- define "mesh-admission.caBundle" -}}
{{- $ca := .Values.certificates.secret.caBundle | toString | trim }}
{{- if hasPrefix "-----BEGIN" $ca }}
{{- $ca | b64enc }}
{{- else }}
{{- $ca | nospace }}
{{- end }}
{{- end }}

{{/* The clientConfig shared by every webhook; call with (dict "root" $ "path" "/mutate"). */}}
{{- define "mesh-admission.clientConfig" -}}
{{- $root := .root -}}
clientConfig:
  service:
    name: {{ include "mesh-admission.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- if eq $root.Values.certificates.mode "secret" }}
  caBundle: {{ include "mesh-admission.caBundle" $root }}
  {{- end }}
{{- end }}

{{/* Annotations of the webhook configurations (cert-manager's cainjector fills caBundle). */}}
{{- define "mesh-admission.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "certManager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s-tls" .Release.Namespace (include "mesh-admission.fullname" .) }}
{{- end }}
{{- end }}

{{/* The ConfigMap's configuration file (DESIGN.md section 6), from .Values.config. */}}
{{- define "mesh-admission.configFile" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "excludedNamespaces" (include "mesh-admission.excludedNamespaces" . | fromJsonArray) }}
{{- toYaml $cfg }}
{{- end }}

{{/*
The pod webhooks' matchConditions: no call for hostNetwork pods or pods that opt out with
sidecar.istio.io/inject=false (label wins over annotation, any case), which the server leaves alone.
*/}}
{{- define "mesh-admission.podMatchConditions" -}}
matchConditions:
  - name: not-host-network
    expression: '!has(object.spec) || !has(object.spec.hostNetwork) || object.spec.hostNetwork != true'
  - name: not-opted-out
    expression: |-
      !(has(object.metadata.labels) && 'sidecar.istio.io/inject' in object.metadata.labels
        ? object.metadata.labels['sidecar.istio.io/inject'].lowerAscii() == 'false'
        : has(object.metadata.annotations) && 'sidecar.istio.io/inject' in object.metadata.annotations &&
          object.metadata.annotations['sidecar.istio.io/inject'].lowerAscii() == 'false')
{{- end }}

{{/* The controller's full name: its Deployment, ServiceAccount and RBAC objects. */}}
{{- define "mesh-admission.controllerName" -}}
{{- printf "%s-controller" (include "mesh-admission.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the controller pods. The name differs from the webhook's, so that the webhook's
Service, PodDisruptionBudget and anti-affinity never select controller pods.
*/}}
{{- define "mesh-admission.controllerSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-controller" (include "mesh-admission.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "mesh-admission.controllerLabels" -}}
helm.sh/chart: {{ include "mesh-admission.chart" . }}
{{ include "mesh-admission.controllerSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
