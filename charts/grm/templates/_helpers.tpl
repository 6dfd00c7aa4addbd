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

{{/* Engines ------------------------------------------------------------------------------ */}}

{{/* The base URL path an engine's API is reached under: TGI at the root, vLLM and SGLang under
/v1 (OpenAI-compatible). */}}
{{- define "grm.engineUrlSuffix" -}}
{{- if ne .Values.engine.kind "tgi" }}/v1{{ end }}
{{- end }}

{{/* The engine kind's own values (image, port, cachePath, ...) as YAML; use with fromYaml. */}}
{{- define "grm.engineKindValues" -}}
{{- toYaml (index .Values.engine .Values.engine.kind) }}
{{- end }}

{{/* Name of the engine container port Prometheus scrapes: TGI's separate Prometheus listener,
else the API port (vLLM and SGLang serve /metrics there). */}}
{{- define "grm.engineMetricsPortName" -}}
{{- if eq .Values.engine.kind "tgi" }}engine-metrics{{ else }}engine-http{{ end }}
{{- end }}

{{/* Comma-separated base URLs of the engine node pools' Services. */}}
{{- define "grm.enginePoolUrls" -}}
{{- $root := . }}
{{- $port := int (index .Values.engine .Values.engine.kind).port }}
{{- $urls := list }}
{{- range .Values.engine.nodePools }}
{{- $urls = append $urls (printf "http://%s.%s.svc:%d%s" (include "grm.componentName" (list $root (printf "engine-%s" .name))) $root.Release.Namespace $port (include "grm.engineUrlSuffix" $root)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* The sampler's engine URLs: its own sidecar on localhost, or every node pool's Service. */}}
{{- define "grm.samplerEngineUrls" -}}
{{- if eq .Values.engine.mode "sidecar" }}
{{- printf "http://127.0.0.1:%d%s" (int (index .Values.engine .Values.engine.kind).port) (include "grm.engineUrlSuffix" .) }}
{{- else }}
{{- include "grm.enginePoolUrls" . }}
{{- end }}
{{- end }}

{{/* GRM_* env that points a sampler or principle generator at engines; call with (list $ urls). */}}
{{- define "grm.engineBackendEnv" -}}
{{- $root := index . 0 }}
{{- $urls := index . 1 }}
{{- if eq $root.Values.engine.kind "tgi" -}}
- name: GRM_BACKEND
  value: tgi
- name: GRM_TGI_URL
  value: {{ $urls | quote }}
{{- else -}}
- name: GRM_BACKEND
  value: openai
- name: GRM_ENGINE
  value: {{ $root.Values.engine.kind | quote }}
- name: GRM_OPENAI_URL
  value: {{ $urls | quote }}
{{- end }}
{{- end }}

{{/* True when the sampler pods carry the engine (and so need a GPU). */}}
{{- define "grm.samplerHasSidecar" -}}
{{- if and (eq .Values.sampler.backend "engine") (eq .Values.engine.mode "sidecar") }}true{{ end }}
{{- end }}

{{/* True when engine node-pool Deployments are rendered. */}}
{{- define "grm.enginePools" -}}
{{- if and (eq .Values.engine.mode "nodePools") (or (eq .Values.sampler.backend "engine") (and .Values.principles.enabled (eq .Values.principles.backend "engine"))) }}true{{ end }}
{{- end }}

{{/* Metrics feeds ---------------------------------------------------------------------- */}}

{{/* "true" when the ServiceMonitor for the grm services is rendered. */}}
{{- define "grm.serviceMonitorOn" -}}
{{- $m := .Values.metrics }}
{{- if $m.enabled }}
{{- $on := $m.serviceMonitor.enabled | toString }}
{{- if or (eq $on "true") (and (eq $on "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) }}true{{ end }}
{{- end }}
{{- end }}

{{/* "true" when the PodMonitor for the engines is rendered (there are engines to scrape). */}}
{{- define "grm.podMonitorOn" -}}
{{- $m := .Values.metrics }}
{{- if and $m.enabled (or (include "grm.samplerHasSidecar" .) (include "grm.enginePools" .)) }}
{{- $on := $m.podMonitor.enabled | toString }}
{{- if or (eq $on "true") (and (eq $on "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor")) }}true{{ end }}
{{- end }}
{{- end }}

{{/* "true" when the sampler HPA / ScaledObject reads the demand metric: the samplers are
scraped (ServiceMonitor) and, for the HPA, the adapter rules are rendered. Otherwise CPU. */}}
{{- define "grm.samplerDemandFed" -}}
{{- $mode := .Values.sampler.autoscaling.mode }}
{{- if include "grm.serviceMonitorOn" . }}
{{- if eq $mode "keda" }}true
{{- else if and .Values.metrics.prometheusAdapter.rules (include "grm.customMetricsApi" (list . .Values.metrics.serviceMonitor.enabled)) }}true
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when the engine pool HPAs read the engines' queue metric. */}}
{{- define "grm.engineQueueFed" -}}
{{- if and (include "grm.podMonitorOn" .) .Values.metrics.prometheusAdapter.rules (include "grm.customMetricsApi" (list . .Values.metrics.podMonitor.enabled)) }}true{{ end }}
{{- end }}

{{/* "true" unless the scrape object was chosen by `auto` and the cluster serves no custom
metrics API (no prometheus-adapter): an HPA on a custom metric could then never read it.
Call with (list $ scrapeObjectEnabledValue). */}}
{{- define "grm.customMetricsApi" -}}
{{- $root := index . 0 }}
{{- if or (ne (index . 1 | toString) "auto") ($root.Capabilities.APIVersions.Has "custom.metrics.k8s.io/v1beta1") }}true{{ end }}
{{- end }}

{{/* PromQL, one unlabelled series: the samples the aggregators' k planner cut (to meet latency
budgets) that the pool would be running now: rate(k deficit) x the samplers' mean generation
time over `sampler.autoscaling.deficit.window` (Little's law). Empty until both series exist;
callers wrap it in `or vector(0)`. */}}
{{- define "grm.samplerDeficitSamples" -}}
{{- $n := .Values.metrics.names }}
{{- $w := .Values.sampler.autoscaling.deficit.window }}
{{- $agg := printf "namespace=%q,pod=~%q" .Release.Namespace (printf "%s-.*" (include "grm.componentName" (list . "aggregator"))) }}
{{- $gen := printf "namespace=%q,pod=~%q,stage=\"generate\"" .Release.Namespace (printf "%s-.*" (include "grm.componentName" (list . "sampler"))) }}
{{- printf "sum(rate(%s{%s}[%s])) * sum(rate(%s_sum{%s}[%s])) / clamp_min(sum(rate(%s_count{%s}[%s])), 1e-9)" $n.kDeficit $agg $w $n.stageDuration $gen $w $n.stageDuration $gen $w }}
{{- end }}

{{/* A Kubernetes quantity (800m, 1, 1.5) as a plain decimal string for KEDA's threshold. */}}
{{- define "grm.quantityDecimal" -}}
{{- $q := toString . }}
{{- if hasSuffix "m" $q }}
{{- divf (trimSuffix "m" $q | float64) 1000.0 }}
{{- else }}
{{- $q | float64 }}
{{- end }}
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
- name: GRM_EVENT_LOOP
  value: {{ default $root.Values.eventLoop $c.eventLoop | quote }}
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

{{/* gRPC probes on the standard health service; call with (list port probesValues).
Readiness asks the server's overall health (the aggregator's follows its samplers, a sampler's
its engine); startup and liveness ask the "liveness" service, SERVING while the process runs,
so a pod whose dependencies are down leaves the Service but is not restarted for it. */}}
{{- define "grm.grpcProbes" -}}
{{- $port := index . 0 }}
{{- $p := index . 1 -}}
startupProbe:
  grpc:
    port: {{ $port }}
    service: liveness
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
    service: liveness
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

{{/* A pool's resolved settings as YAML (use with fromYaml): the engine defaults under the
pool's own; call with (dict "root" $ "pool" poolValues). The sampler pool in sidecar mode is
(dict "name" "sampler"). */}}
{{- define "grm.enginePool" -}}
{{- $e := .root.Values.engine }}
{{- $p := .pool }}
{{- $cache := merge (deepCopy ($p.cache | default dict)) (omit $e.cache "predownload") }}
{{- $model := merge (deepCopy ($p.model | default dict)) $e.model }}
name: {{ $p.name }}
gpus: {{ int (default $e.gpus $p.gpus) }}
model:
  {{- toYaml $model | nindent 2 }}
resources:
  {{- toYaml (default $e.resources $p.resources) | nindent 2 }}
extraArgs:
  {{- toYaml (concat $e.extraArgs ($p.extraArgs | default list)) | nindent 2 }}
extraEnv:
  {{- toYaml (concat $e.extraEnv ($p.extraEnv | default list)) | nindent 2 }}
cache:
  {{- toYaml $cache | nindent 2 }}
{{- end }}

{{/* The chart's model-cache claim of a pool; call with (list $ poolName). */}}
{{- define "grm.cacheClaimName" -}}
{{- include "grm.componentName" (list (index . 0) (printf "model-cache-%s" (index . 1))) }}
{{- end }}

{{/* The engine container; call with (dict "root" $ "pool" resolvedPool "sidecar" bool).
Its args, ports, probes, user and cache path follow the engine (see the README's engine facts). */}}
{{- define "grm.engineContainer" -}}
{{- $root := .root }}
{{- $e := $root.Values.engine }}
{{- $k := index $e $e.kind }}
{{- $p := .pool }}
{{- $gpus := int $p.gpus }}
{{- $served := default $p.model.id $p.model.servedModelName -}}
- name: {{ $e.kind }}
  image: {{ include "grm.imageRef" (dict "image" $k.image "default" "") | quote }}
  imagePullPolicy: {{ $k.image.pullPolicy }}
  {{- if .sidecar }}
  # A native sidecar: started (and healthy) before the sampler, stopped after it has drained.
  restartPolicy: Always
  {{- end }}
  {{- if eq $e.kind "vllm" }}
  command: ["vllm", "serve"]
  {{- else if eq $e.kind "sglang" }}
  command: ["python3", "-m", "sglang.launch_server"]
  {{- end }}
  args:
    {{- if eq $e.kind "tgi" }}
    - --model-id
    - {{ $p.model.id | quote }}
    - --revision
    - {{ $p.model.revision | quote }}
    - --hostname
    - "0.0.0.0"
    - --port
    - {{ $k.port | quote }}
    - --prometheus-port
    - {{ $k.metricsPort | quote }}
    - --max-concurrent-requests
    - {{ $e.maxConcurrentRequests | quote }}
    - --max-input-tokens
    - {{ $e.maxInputTokens | quote }}
    - --max-total-tokens
    - {{ $e.maxTotalTokens | quote }}
    {{- if gt $gpus 1 }}
    - --num-shard
    - {{ $gpus | quote }}
    {{- end }}
    {{- else if eq $e.kind "vllm" }}
    - --model
    - {{ $p.model.id | quote }}
    - --revision
    - {{ $p.model.revision | quote }}
    - --served-model-name
    - {{ $served | quote }}
    - --host
    - "0.0.0.0"
    - --port
    - {{ $k.port | quote }}
    - --max-model-len
    - {{ $e.maxTotalTokens | quote }}
    - --max-num-seqs
    - {{ $e.maxConcurrentRequests | quote }}
    - --gpu-memory-utilization
    - {{ $e.gpuMemoryFraction | quote }}
    {{- if gt $gpus 1 }}
    - --tensor-parallel-size
    - {{ $gpus | quote }}
    {{- end }}
    {{- else }}
    - --model-path
    - {{ $p.model.id | quote }}
    - --revision
    - {{ $p.model.revision | quote }}
    - --served-model-name
    - {{ $served | quote }}
    - --host
    - "0.0.0.0"
    - --port
    - {{ $k.port | quote }}
    - --context-length
    - {{ $e.maxTotalTokens | quote }}
    - --max-running-requests
    - {{ $e.maxConcurrentRequests | quote }}
    - --mem-fraction-static
    - {{ $e.gpuMemoryFraction | quote }}
    {{- if gt $gpus 1 }}
    - --tp
    - {{ $gpus | quote }}
    {{- end }}
    - --enable-metrics
    {{- end }}
    {{- range $p.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: HF_HOME
      value: {{ $k.cachePath | quote }}
    {{- if $p.cache.offline }}
    - name: HF_HUB_OFFLINE
      value: "1"
    {{- end }}
    {{- if $p.model.hfTokenSecret }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $p.model.hfTokenSecret }}
          key: {{ $p.model.hfTokenSecretKey }}
    {{- end }}
    {{- with $p.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: engine-http
      containerPort: {{ $k.port }}
      protocol: TCP
    {{- if eq $e.kind "tgi" }}
    - name: engine-metrics
      containerPort: {{ $k.metricsPort }}
      protocol: TCP
    {{- end }}
  startupProbe:
    httpGet:
      path: /health
      port: engine-http
    periodSeconds: {{ $e.probes.startup.periodSeconds }}
    failureThreshold: {{ $e.probes.startup.failureThreshold }}
    timeoutSeconds: 5
  readinessProbe:
    httpGet:
      path: /health
      port: engine-http
    periodSeconds: {{ $e.probes.readiness.periodSeconds }}
    failureThreshold: {{ $e.probes.readiness.failureThreshold }}
    timeoutSeconds: 5
  livenessProbe:
    httpGet:
      path: /health
      port: engine-http
    periodSeconds: {{ $e.probes.liveness.periodSeconds }}
    failureThreshold: {{ $e.probes.liveness.failureThreshold }}
    timeoutSeconds: 10
  resources:
    requests:
      {{- with $p.resources.requests }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{ $root.Values.gpu.resourceName }}: {{ $gpus }}
    limits:
      {{- with $p.resources.limits }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{ $root.Values.gpu.resourceName }}: {{ $gpus }}
  securityContext:
    {{- merge (deepCopy $k.securityContext) $e.securityContext | toYaml | nindent 4 }}
  volumeMounts:
    - name: model-cache
      mountPath: {{ $k.cachePath }}
    - name: engine-shm
      mountPath: /dev/shm
    - name: tmp
      mountPath: /tmp
{{- end }}

{{/* Volumes of an engine container; call with (dict "root" $ "pool" resolvedPool). */}}
{{- define "grm.engineVolumes" -}}
{{- $c := .pool.cache -}}
- name: model-cache
  {{- if eq $c.type "emptyDir" }}
  emptyDir:
    sizeLimit: {{ $c.size }}
  {{- else if eq $c.type "hostPath" }}
  hostPath:
    path: {{ $c.hostPath }}
    type: DirectoryOrCreate
  {{- else if eq $c.type "existingClaim" }}
  persistentVolumeClaim:
    claimName: {{ required (printf "engine.cache.existingClaim is required for cache type existingClaim (pool %s)" .pool.name) $c.existingClaim }}
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ include "grm.cacheClaimName" (list .root .pool.name) }}
  {{- end }}
- name: engine-shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .root.Values.engine.shmSize }}
{{- end }}

{{/* Every engine pool of the release, resolved, as a YAML list (use with fromYamlArray). */}}
{{- define "grm.allEnginePools" -}}
{{- $root := . }}
{{- $pools := list }}
{{- if include "grm.samplerHasSidecar" . }}
{{- $pools = append $pools (include "grm.enginePool" (dict "root" $root "pool" (dict "name" "sampler")) | fromYaml) }}
{{- else if include "grm.enginePools" . }}
{{- range .Values.engine.nodePools }}
{{- $pools = append $pools (include "grm.enginePool" (dict "root" $root "pool" .) | fromYaml) }}
{{- end }}
{{- end }}
{{- toYaml $pools }}
{{- end }}

{{/* The Deployment strategy of a GPU pod; call with a strategy map (empty = none). */}}
{{- define "grm.strategy" -}}
{{- with . }}
strategy:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Template-time checks JSON schema cannot express. */}}
{{- define "grm.validate" -}}
{{- $v := .Values }}
{{- $a := $v.sampler.autoscaling }}
{{- if and (ne $a.mode "none") (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "sampler.autoscaling.minReplicas (%d) must not exceed sampler.autoscaling.maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- if and (eq $a.mode "hpa") (lt (int $a.minReplicas) 1) }}
{{- fail "sampler.autoscaling.minReplicas must be at least 1 with mode hpa (scaling to zero needs mode keda)" }}
{{- end }}
{{- /* The windows are PromQL range durations: Prometheus rejects a zero range and units out of
order (30s1m, 1m1m), which the schema's pattern lets through. */}}
{{- range $key, $w := dict "sampler.autoscaling.metric.window" $a.metric.window "sampler.autoscaling.deficit.window" $a.deficit.window }}
{{- if and $w (not (and (regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$" $w) (regexMatch "[1-9]" $w))) }}
{{- fail (printf "%s (%q) must be a PromQL duration greater than 0, its units from the largest down (1m, 1m30s)" $key $w) }}
{{- end }}
{{- end }}
{{- $g := $v.aggregator.autoscaling }}
{{- if and $g.enabled (gt (int $g.minReplicas) (int $g.maxReplicas)) }}
{{- fail (printf "aggregator.autoscaling.minReplicas (%d) must not exceed aggregator.autoscaling.maxReplicas (%d)" (int $g.minReplicas) (int $g.maxReplicas)) }}
{{- end }}
{{- $seen := dict }}
{{- range $v.engine.nodePools }}
{{- if hasKey $seen .name }}
{{- fail (printf "engine.nodePools: the pool name %q appears more than once (each pool renders its own Deployment, Service and cache)" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- if .maxReplicas }}
{{- $min := int (ternary .replicas 1 (hasKey . "replicas")) }}
{{- if gt $min (int .maxReplicas) }}
{{- fail (printf "engine.nodePools[%s]: replicas (%d, the HPA's minimum) must not exceed maxReplicas (%d)" .name $min (int .maxReplicas)) }}
{{- end }}
{{- if lt $min 1 }}
{{- fail (printf "engine.nodePools[%s]: replicas must be at least 1 when maxReplicas is set (the HPA's minimum)" .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.engine.cache.predownload.enabled }}
{{- range $pool := include "grm.allEnginePools" . | fromYamlArray }}
{{- if not (has $pool.cache.type (list "pvc" "existingClaim")) }}
{{- fail (printf "engine.cache.predownload needs engine.cache.type pvc or existingClaim (a shared claim the Job can fill); pool %q has %s" $pool.name $pool.cache.type) }}
{{- end }}
{{- end }}
{{- end }}
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
