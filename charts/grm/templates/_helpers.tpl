{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "grm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource-name prefix: <release>-grm, or the release name when it already says grm. */}}
{{- define "grm.fullname" -}}
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

{{/* "<fullname>-<component>"; call with (list $ "sampler"). */}}
{{- define "grm.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "grm.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "grm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ------------------------------------------------------------------------------ */}}

{{/* Selector labels; call with (list $ "component"). */}}
{{- define "grm.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "grm.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* All labels; call with (list $ "component"). */}}
{{- define "grm.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "grm.chart" $root }}
{{ include "grm.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: grm-suite
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Images ------------------------------------------------------------------------------ */}}

{{/* repository:tag[@digest]; call with (dict "image" .Values.x.image "default" "tag"). */}}
{{- define "grm.imageRef" -}}
{{- $tag := default .default .image.tag | toString -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "grm.image" -}}
{{- include "grm.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end }}

{{/* Service accounts -------------------------------------------------------------------- */}}

{{- define "grm.serviceAccountName" -}}
{{- default (include "grm.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "grm.aggregatorServiceAccountName" -}}
{{- default (include "grm.componentName" (list . "aggregator")) .Values.aggregator.serviceAccount.name }}
{{- end }}

{{/* Addresses --------------------------------------------------------------------------- */}}

{{- define "grm.samplerHeadlessHost" -}}
{{- printf "%s.%s.svc" (include "grm.componentName" (list . "sampler")) .Release.Namespace }}
{{- end }}

{{/* Comma-separated TGI base URLs of the node pools' Services. */}}
{{- define "grm.tgiPoolUrls" -}}
{{- $root := . }}
{{- $urls := list }}
{{- range .Values.tgi.nodePools }}
{{- $urls = append $urls (printf "http://%s.%s.svc:%d" (include "grm.componentName" (list $root (printf "tgi-%s" .name))) $root.Release.Namespace (int $root.Values.tgi.port)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* The sampler's TGI URLs: its own sidecar on localhost, or every node pool's Service. */}}
{{- define "grm.samplerTgiUrls" -}}
{{- if eq .Values.tgi.mode "sidecar" }}
{{- printf "http://127.0.0.1:%d" (int .Values.tgi.port) }}
{{- else }}
{{- include "grm.tgiPoolUrls" . }}
{{- end }}
{{- end }}

{{/* True when the sampler pods carry a TGI container (and so need a GPU). */}}
{{- define "grm.samplerHasSidecar" -}}
{{- if and (eq .Values.sampler.backend "tgi") (eq .Values.tgi.mode "sidecar") }}true{{ end }}
{{- end }}

{{/* True when TGI node-pool Deployments are rendered. */}}
{{- define "grm.tgiPools" -}}
{{- if and (eq .Values.tgi.mode "nodePools") (or (eq .Values.sampler.backend "tgi") (and .Values.principles.enabled (eq .Values.principles.backend "tgi"))) }}true{{ end }}
{{- end }}

{{/* Redis --------------------------------------------------------------------------------- */}}

{{- define "grm.redisName" -}}
{{- include "grm.componentName" (list . "redis") }}
{{- end }}

{{/* The Secret the chart creates for Redis (URL, and the generated password for builtin). */}}
{{- define "grm.redisChartSecret" -}}
{{- printf "%s-cache" (include "grm.redisName" .) }}
{{- end }}

{{/* Env entries GRM_REDIS_URL / GRM_REDIS_PASSWORD / GRM_CACHE_PREFIX for the aggregator. */}}
{{- define "grm.redisEnv" -}}
{{- $r := .Values.redis }}
{{- if eq $r.mode "builtin" }}
- name: GRM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "grm.redisChartSecret" . }}
      key: redis-url
- name: GRM_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default (include "grm.redisChartSecret" .) $r.builtin.existingSecret }}
      key: redis-password
{{- else if eq $r.mode "external" }}
- name: GRM_REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- if $r.external.existingSecretUrlKey }}
      name: {{ required "redis.external.existingSecret is required with existingSecretUrlKey" $r.external.existingSecret }}
      key: {{ $r.external.existingSecretUrlKey }}
      {{- else }}
      name: {{ include "grm.redisChartSecret" . }}
      key: redis-url
      {{- end }}
{{- if $r.external.existingSecret }}
- name: GRM_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.external.existingSecret }}
      key: {{ $r.external.existingSecretPasswordKey }}
{{- end }}
{{- end }}
{{- if ne $r.mode "none" }}
- name: GRM_CACHE_PREFIX
  value: {{ $r.prefix | quote }}
{{- end }}
{{- end }}

{{/* Pod pieces ---------------------------------------------------------------------------- */}}

{{/* GRM_* env from a component's `settings` map: `max-k: 32` -> GRM_MAX_K=32. */}}
{{- define "grm.settingsEnv" -}}
{{- range $key, $value := . }}
- name: {{ printf "GRM_%s" ($key | replace "-" "_" | upper) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Env common to the three grm services; call with (list $ componentValues). */}}
{{- define "grm.commonEnv" -}}
{{- $root := index . 0 }}
{{- $c := index . 1 -}}
- name: GRM_HOST
  value: "0.0.0.0"
- name: GRM_PORT
  value: {{ $c.port | quote }}
- name: GRM_LOG_LEVEL
  value: {{ $c.logLevel | quote }}
- name: GRM_GRACE_S
  value: {{ sub (int $c.terminationGracePeriodSeconds) 5 | quote }}
{{- if $root.Values.metrics.enabled }}
- name: GRM_METRICS_PORT
  value: {{ $root.Values.metrics.port | quote }}
{{- end }}
{{- end }}

{{/* Env of the embedded llama.cpp backend. */}}
{{- define "grm.embeddedEnv" -}}
{{- with .Values.embedded.modelPath }}
- name: GRM_MODEL_PATH
  value: {{ . | quote }}
{{- end }}
- name: GRM_N_CTX
  value: {{ .Values.embedded.nCtx | quote }}
{{- if gt (int .Values.embedded.threads) 0 }}
- name: GRM_N_THREADS
  value: {{ .Values.embedded.threads | quote }}
{{- end }}
{{- end }}

{{/* gRPC probes on the standard health service; call with (list port probesValues). */}}
{{- define "grm.grpcProbes" -}}
{{- $port := index . 0 }}
{{- $p := index . 1 -}}
startupProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
  timeoutSeconds: 2
readinessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
  timeoutSeconds: 2
livenessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
  timeoutSeconds: 5
{{- end }}

{{/* Container ports of a grm service; call with (list $ port). */}}
{{- define "grm.containerPorts" -}}
{{- $root := index . 0 -}}
- name: grpc
  containerPort: {{ index . 1 }}
  protocol: TCP
{{- if $root.Values.metrics.enabled }}
- name: metrics
  containerPort: {{ $root.Values.metrics.port }}
  protocol: TCP
{{- end }}
{{- if $root.Values.tls.enabled }}
- name: health
  containerPort: {{ $root.Values.tls.healthPort }}
  protocol: TCP
{{- end }}
{{- end }}

{{/* The port kubelet gRPC probes use: the plaintext health port with TLS (probes cannot
speak TLS), else the gRPC port; call with (list $ grpcPort). */}}
{{- define "grm.probePort" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.tls.enabled }}{{ $root.Values.tls.healthPort }}{{ else }}{{ index . 1 }}{{ end }}
{{- end }}

{{/* TLS and bearer-token env of a grm service; call with (list $ dialsUpstream). Paths are
where grm.securityVolumes / grm.securityMounts put the Secrets. */}}
{{- define "grm.securityEnv" -}}
{{- $root := index . 0 }}
{{- $upstream := index . 1 }}
{{- $tls := $root.Values.tls }}
{{- if $tls.enabled }}
- name: GRM_TLS_CERT
  value: /etc/grm/tls/tls.crt
- name: GRM_TLS_KEY
  value: /etc/grm/tls/tls.key
{{- if $tls.mutual }}
- name: GRM_TLS_CLIENT_CA
  value: /etc/grm/tls/ca.crt
{{- end }}
- name: GRM_HEALTH_PORT
  value: {{ $tls.healthPort | quote }}
{{- if $upstream }}
- name: GRM_UPSTREAM_TLS_CA
  value: /etc/grm/tls/ca.crt
{{- if $tls.mutual }}
- name: GRM_UPSTREAM_TLS_CERT
  value: /etc/grm/tls/tls.crt
- name: GRM_UPSTREAM_TLS_KEY
  value: /etc/grm/tls/tls.key
{{- end }}
{{- with $tls.serverName }}
- name: GRM_UPSTREAM_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if $root.Values.auth.enabled }}
- name: GRM_AUTH_TOKEN_FILE
  value: /etc/grm/auth/token
{{- end }}
{{- end }}

{{/* Read-only mounts of the TLS and token Secrets. */}}
{{- define "grm.securityMounts" -}}
{{- if .Values.tls.enabled }}
- name: grm-tls
  mountPath: /etc/grm/tls
  readOnly: true
{{- end }}
{{- if .Values.auth.enabled }}
- name: grm-auth
  mountPath: /etc/grm/auth
  readOnly: true
{{- end }}
{{- end }}

{{/* The TLS and token Secrets as volumes (existing Secrets: the chart never holds keys). */}}
{{- define "grm.securityVolumes" -}}
{{- if .Values.tls.enabled }}
- name: grm-tls
  secret:
    secretName: {{ required "tls.secretName is required when tls.enabled (a Secret with tls.crt, tls.key, ca.crt)" .Values.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if .Values.auth.enabled }}
- name: grm-auth
  secret:
    secretName: {{ required "auth.secretName is required when auth.enabled (a Secret holding the token)" .Values.auth.secretName }}
    defaultMode: 0440
    items:
      - key: {{ .Values.auth.secretKey }}
        path: token
{{- end }}
{{- end }}

{{/* Scheduling of a pod; call with (dict "c" componentValues "gpu" bool "root" $). */}}
{{- define "grm.scheduling" -}}
{{- $c := .c }}
{{- $gpu := .root.Values.gpu }}
{{- $nodeSelector := $c.nodeSelector | default dict }}
{{- $tolerations := $c.tolerations | default list }}
{{- $runtimeClass := $c.runtimeClassName }}
{{- if .gpu }}
{{- $nodeSelector = merge (deepCopy $nodeSelector) $gpu.nodeSelector }}
{{- $tolerations = concat $gpu.tolerations $tolerations }}
{{- $runtimeClass = default $gpu.runtimeClassName $runtimeClass }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $runtimeClass }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* The writable /tmp every container gets (the root filesystem is read-only). */}}
{{- define "grm.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* The embedded model volume, when one is configured. */}}
{{- define "grm.modelVolume" -}}
{{- with .Values.embedded.modelVolume }}
- name: models
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A TGI container; call with (dict "root" $ "gpus" n "name" containerName). */}}
{{- define "grm.tgiContainer" -}}
{{- $root := .root }}
{{- $t := $root.Values.tgi }}
{{- $gpus := int (default $t.gpus .gpus) -}}
- name: {{ .name }}
  image: {{ include "grm.imageRef" (dict "image" $t.image "default" "") | quote }}
  imagePullPolicy: {{ $t.image.pullPolicy }}
  args:
    - --model-id
    - {{ $t.model.id | quote }}
    - --revision
    - {{ $t.model.revision | quote }}
    - --hostname
    - "0.0.0.0"
    - --port
    - {{ $t.port | quote }}
    - --max-concurrent-requests
    - {{ $t.maxConcurrentRequests | quote }}
    - --max-input-tokens
    - {{ $t.maxInputTokens | quote }}
    - --max-total-tokens
    - {{ $t.maxTotalTokens | quote }}
    {{- if gt $gpus 1 }}
    - --num-shard
    - {{ $gpus | quote }}
    {{- end }}
    {{- range $t.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: HF_HOME
      value: /data
    - name: HOME
      value: /tmp
    {{- if $t.model.hfTokenSecret }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $t.model.hfTokenSecret }}
          key: {{ $t.model.hfTokenSecretKey }}
    {{- end }}
    {{- with $t.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: tgi-http
      containerPort: {{ $t.port }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /health
      port: tgi-http
    periodSeconds: {{ $t.probes.startup.periodSeconds }}
    failureThreshold: {{ $t.probes.startup.failureThreshold }}
    timeoutSeconds: 5
  readinessProbe:
    httpGet:
      path: /health
      port: tgi-http
    periodSeconds: {{ $t.probes.readiness.periodSeconds }}
    failureThreshold: {{ $t.probes.readiness.failureThreshold }}
    timeoutSeconds: 5
  livenessProbe:
    httpGet:
      path: /health
      port: tgi-http
    periodSeconds: {{ $t.probes.liveness.periodSeconds }}
    failureThreshold: {{ $t.probes.liveness.failureThreshold }}
    timeoutSeconds: 10
  resources:
    requests:
      {{- with $t.resources.requests }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{ $root.Values.gpu.resourceName }}: {{ $gpus }}
    limits:
      {{- with $t.resources.limits }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{ $root.Values.gpu.resourceName }}: {{ $gpus }}
  securityContext:
    {{- merge (deepCopy $t.securityContext) $root.Values.securityContext | toYaml | nindent 4 }}
  volumeMounts:
    - name: tgi-data
      mountPath: /data
    - name: tgi-shm
      mountPath: /dev/shm
    - name: tmp
      mountPath: /tmp
{{- end }}

{{/* Volumes of a TGI container. */}}
{{- define "grm.tgiVolumes" -}}
- name: tgi-data
  emptyDir:
    sizeLimit: {{ .Values.tgi.cacheSizeLimit }}
- name: tgi-shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.tgi.shmSize }}
{{- end }}

{{/* NetworkPolicy peers allowed to scrape metrics (empty = any source). */}}
{{- define "grm.metricsIngress" -}}
{{- if .Values.metrics.enabled }}
- ports:
    - port: metrics
      protocol: TCP
  {{- with .Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
