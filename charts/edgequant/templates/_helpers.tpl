{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "edgequant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name of the operator's objects. */}}
{{- define "edgequant.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "edgequant.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "edgequant.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "edgequant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgequant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "edgequant.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "edgequant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgequant
{{- end }}

{{- define "edgequant.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgequant.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. Argument: dict "image" <values> "root" $ */}}
{{- define "edgequant.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* "true" when the operator serves every namespace (ClusterRole, ClusterKopfPeering). */}}
{{- define "edgequant.clusterWide" -}}
{{- if eq (len .Values.operator.watchNamespaces) 0 }}true{{ end }}
{{- end }}

{{/* "true" when replicas coordinate through a kopf peering object (more than one replica, or asked for). */}}
{{- define "edgequant.peering" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.peering.enabled }}true{{ end }}
{{- end }}

{{- define "edgequant.peeringName" -}}
{{- default (include "edgequant.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
The operator's settings as EDGEQUANT_OPERATOR_* env (edgequant.controller.settings). Not set here: PEERING_PRIORITY,
which each replica draws at random (one value for all replicas would make them tie and all stand by).
*/}}
{{- define "edgequant.operatorEnv" -}}
- name: POD_ID  # kopf's identity in the peering object
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: EDGEQUANT_OPERATOR_NAMESPACES
  value: {{ join "," .Values.operator.watchNamespaces | quote }}
- name: EDGEQUANT_OPERATOR_IMAGES
  value: {{ include "edgequant.quantizerImages" . | quote }}
- name: EDGEQUANT_OPERATOR_IMAGE_PULL_POLICY
  value: {{ .Values.jobs.imagePullPolicy | quote }}
- name: EDGEQUANT_OPERATOR_DEFAULT_REQUESTS
  value: {{ .Values.jobs.defaultResources.requests | default dict | toJson | quote }}
- name: EDGEQUANT_OPERATOR_DEFAULT_LIMITS
  value: {{ .Values.jobs.defaultResources.limits | default dict | toJson | quote }}
- name: EDGEQUANT_OPERATOR_MAX_CONCURRENT_JOBS
  value: {{ .Values.jobs.maxConcurrent | quote }}
- name: EDGEQUANT_OPERATOR_CAPACITY_RETRY_SECONDS
  value: {{ .Values.jobs.capacityRetrySeconds | quote }}
- name: EDGEQUANT_OPERATOR_WORKER_SERVICE_ACCOUNT
  value: {{ .Values.jobs.serviceAccountName | quote }}
- name: EDGEQUANT_OPERATOR_RUN_AS_USER
  value: {{ .Values.jobs.runAsUser | quote }}
- name: EDGEQUANT_OPERATOR_DEFAULT_ACTIVE_DEADLINE_SECONDS
  value: {{ .Values.jobs.activeDeadlineSeconds | quote }}
- name: EDGEQUANT_OPERATOR_SCRATCH_SIZE
  value: {{ .Values.jobs.scratchSize | quote }}
- name: EDGEQUANT_OPERATOR_S3_CONNECT_TIMEOUT_SECONDS
  value: {{ .Values.jobs.s3Timeouts.connectSeconds | quote }}
- name: EDGEQUANT_OPERATOR_S3_READ_TIMEOUT_SECONDS
  value: {{ .Values.jobs.s3Timeouts.readSeconds | quote }}
- name: EDGEQUANT_OPERATOR_S3_MAX_ATTEMPTS
  value: {{ .Values.jobs.s3Timeouts.maxAttempts | quote }}
- name: EDGEQUANT_OPERATOR_ALLOWED_S3_ENDPOINTS
  value: {{ join "," .Values.policy.allowedS3Endpoints | quote }}
- name: EDGEQUANT_OPERATOR_ALLOWED_IMAGE_REPOSITORIES
  value: {{ join "," .Values.policy.allowedImageRepositories | quote }}
- name: EDGEQUANT_OPERATOR_ALLOWED_SERVICE_ACCOUNTS
  value: {{ join "," .Values.policy.allowedServiceAccounts | quote }}
- name: EDGEQUANT_OPERATOR_TOKEN_SERVICE_ACCOUNTS
  value: {{ join "," .Values.policy.tokenServiceAccounts | quote }}
- name: EDGEQUANT_OPERATOR_ALLOWED_CREDENTIALS_SECRETS
  value: {{ join "," .Values.policy.allowedCredentialsSecrets | quote }}
- name: EDGEQUANT_OPERATOR_GPU_RESOURCE
  value: {{ .Values.jobs.gpu.resource | quote }}
- name: EDGEQUANT_OPERATOR_GPU_NODE_SELECTOR
  value: {{ .Values.jobs.gpu.nodeSelector | default dict | toJson | quote }}
- name: EDGEQUANT_OPERATOR_GPU_TOLERATIONS
  value: {{ .Values.jobs.gpu.tolerations | default list | toJson | quote }}
- name: EDGEQUANT_OPERATOR_PEERING_NAME
  value: {{ ternary (include "edgequant.peeringName" .) "" (eq (include "edgequant.peering" .) "true") | quote }}
- name: EDGEQUANT_OPERATOR_LIVENESS_PORT
  value: {{ .Values.liveness.port | quote }}
- name: EDGEQUANT_OPERATOR_METRICS_PORT
  value: {{ ternary .Values.metrics.port 0 .Values.metrics.enabled | quote }}
- name: EDGEQUANT_OPERATOR_LOG_FORMAT
  value: {{ .Values.operator.logFormat | quote }}
- name: EDGEQUANT_OPERATOR_WORKERS
  value: {{ .Values.operator.workers | quote }}
- name: EDGEQUANT_OPERATOR_RESYNC_SECONDS
  value: {{ .Values.operator.resyncSeconds | quote }}
- name: EDGEQUANT_OPERATOR_KUEUE
  value: {{ .Values.kueue.enabled | quote }}
{{- end }}

{{/* {"tflite": "repo:tag", ...} for EDGEQUANT_OPERATOR_IMAGES. */}}
{{- define "edgequant.quantizerImages" -}}
{{- $images := dict }}
{{- range $family, $image := .Values.quantizerImages }}
{{- $_ := set $images $family (include "edgequant.image" (dict "image" $image "root" $)) }}
{{- end }}
{{- toJson $images }}
{{- end }}

{{/* AWS S3's own endpoint hosts: the same pattern as edgequant.controller.policy.AWS_S3_HOST (a unit test checks). */}}
{{- define "edgequant.awsS3Host" -}}
^s3(-fips)?(\.dualstack)?(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?$
{{- end }}

{{/* A query parameter that carries a credential (edgequant.api.uri_credentials.CREDENTIAL_QUERY_KEYS; a unit test checks). */}}
{{- define "edgequant.credentialQuery" -}}
[?&](x-amz-credential|x-amz-signature|x-amz-security-token|awsaccesskeyid|signature|x-goog-credential|x-goog-signature|sig|token|access_token|password|passwd|secret|access_key|secret_key|accesskey|secretkey|api_key|apikey)=
{{- end }}
