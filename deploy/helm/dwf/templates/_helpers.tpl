{{/* The four services, in a fixed order: keys of .Values.services and `dwf serve` names. */}}
{{- define "dwf.serviceKeys" -}}
order_gateway inventory fulfillment notifications
{{- end }}

{{- define "dwf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-dwf, or the release name alone when it already contains the chart name. */}}
{{- define "dwf.fullname" -}}
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

{{/* k8s-safe component name of a service key: order_gateway -> order-gateway */}}
{{- define "dwf.component" -}}
{{- replace "_" "-" . -}}
{{- end }}

{{/* Object name of a component. Context: dict "root" $ "component" "order-gateway" */}}
{{- define "dwf.objectName" -}}
{{- printf "%s-%s" (include "dwf.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dwf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of a component. Context: dict "root" $ "component" "inventory" */}}
{{- define "dwf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dwf.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of a component's objects. Context: dict "root" $ "component" "inventory" */}}
{{- define "dwf.labels" -}}
{{ include "dwf.selectorLabels" . }}
helm.sh/chart: {{ include "dwf.chart" .root }}
app.kubernetes.io/version: {{ (.root.Values.image.tag | default .root.Chart.AppVersion) | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: dwf
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels shared by the four service pods (not sandboxes, not migrations). */}}
{{- define "dwf.servicePodLabels" -}}
app.kubernetes.io/name: {{ include "dwf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
dwf.io/role: service
{{- end }}

{{- define "dwf.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository ($img.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{- define "dwf.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create -}}
{{ include "dwf.objectName" . }}
{{- else -}}
default
{{- end -}}
{{- end }}

{{/* Address clients use for a service key: <name>.<namespace>.svc:<port> */}}
{{- define "dwf.serviceAddr" -}}
{{- printf "%s.%s.svc:%d" (include "dwf.objectName" (dict "root" .root "component" (include "dwf.component" .key))) .root.Release.Namespace (int .root.Values.grpc.port) -}}
{{- end }}

{{- define "dwf.natsUrl" -}}
{{- required "externalNats.url is required (the chart installs no NATS; see docs/deploy.md)" .Values.externalNats.url -}}
{{- end }}

{{- define "dwf.sandboxUrl" -}}
{{- $sb := index .root.Values.sandboxes .name -}}
{{- printf "http://%s.%s.svc:%d" (include "dwf.objectName" (dict "root" .root "component" (printf "sandbox-%s" .name))) .root.Release.Namespace (int $sb.port) -}}
{{- end }}

{{/*
Base URL fulfillment uses for an external system (erp, wms, carrier): the enabled sandbox's
in-cluster URL, else integrations.<system>Url; "" when neither (the system is not configured,
fulfillment gets neither its URL nor its token). Context: dict "root" $ "system" "erp"
*/}}
{{- define "dwf.integrationUrl" -}}
{{- $v := .root.Values -}}
{{- if (index $v.sandboxes .system).enabled -}}
{{- include "dwf.sandboxUrl" (dict "root" .root "name" .system) -}}
{{- else -}}
{{- index $v.integrations (printf "%sUrl" .system) -}}
{{- end -}}
{{- end }}

{{/* Name of the Secret holding the ERP/WMS/carrier bearer tokens. */}}
{{- define "dwf.integrationsSecretName" -}}
{{- .Values.integrations.credentials.existingSecret | default (printf "%s-integrations" (include "dwf.fullname" .)) -}}
{{- end }}

{{/*
Tokens of the chart-managed integrations Secret as JSON {"erp": "...", ...}, one per configured
system: the given integrations.credentials.<system>Token, else the one the Secret already holds
(lookup; nothing offline), else a generated one. Computed once per render (memoized in .Values)
so that the Secret and the pods' checksum annotations agree.
*/}}
{{- define "dwf.integrationTokens" -}}
{{- if not (hasKey .Values "__dwfIntegrationTokens") -}}
{{- $c := .Values.integrations.credentials -}}
{{- $found := lookup "v1" "Secret" .Release.Namespace (include "dwf.integrationsSecretName" .) -}}
{{- $existing := dict -}}
{{- if $found }}{{ $existing = $found.data | default dict }}{{ end -}}
{{- $tokens := dict -}}
{{- range $system := list "erp" "wms" "carrier" -}}
{{- if include "dwf.integrationUrl" (dict "root" $ "system" $system) -}}
{{- $token := index $c (printf "%sToken" $system) -}}
{{- if not $token -}}
{{- with index $existing (index $c.keys (printf "%sToken" $system)) }}{{ $token = b64dec . }}{{ end -}}
{{- end -}}
{{- $_ := set $tokens $system ($token | default (randAlphaNum 40)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values "__dwfIntegrationTokens" $tokens -}}
{{- end -}}
{{- index .Values "__dwfIntegrationTokens" | toJson -}}
{{- end }}

{{/*
A bearer-token env var read from the integrations Secret.
Context: dict "root" $ "system" "erp" "name" "DWF_FULFILLMENT_ERP_TOKEN"
*/}}
{{- define "dwf.integrationTokenEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "dwf.integrationsSecretName" .root }}
      key: {{ index .root.Values.integrations.credentials.keys (printf "%sToken" .system) }}
{{- end }}

{{- define "dwf.tlsSecret" -}}
{{- $svc := index .root.Values.services .key -}}
{{- $svc.tls.existingSecret | default .root.Values.tls.existingSecret -}}
{{- end }}

{{/*
Non-secret environment of a service, as a YAML map NAME: "value". Single source for the
service ConfigMap and the migration Job (hooks run before the ConfigMap exists).
Context: dict "root" $ "key" "inventory"
*/}}
{{- define "dwf.serviceConfig" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := index $v.services .key -}}
{{- $component := include "dwf.component" .key -}}
{{- $env := dict -}}
{{- $_ := set $env "DWF_SERVICE" .key -}}
{{- $_ := set $env "DWF_GRPC_HOST" "0.0.0.0" -}}
{{- $_ := set $env "DWF_GRPC_PORT" (toString $v.grpc.port) -}}
{{- $_ := set $env "DWF_METRICS_PORT" (toString $v.metrics.port) -}}
{{- $_ := set $env "DWF_DB_SCHEMA" ($svc.dbSchema | default .key) -}}
{{- $_ := set $env "DWF_DB_POOL_SIZE" (toString $v.config.dbPoolSize) -}}
{{- $_ := set $env "DWF_NATS_URL" (include "dwf.natsUrl" $root) -}}
{{- $_ := set $env "DWF_LOG_LEVEL" $v.config.logLevel -}}
{{- $_ := set $env "DWF_LOG_FORMAT" $v.config.logFormat -}}
{{- $_ := set $env "DWF_DRAIN_SECONDS" (toString $v.config.drainSeconds) -}}
{{- $_ := set $env "DWF_SHUTDOWN_GRACE_SECONDS" (toString $v.config.shutdownGraceSeconds) -}}
{{- $_ := set $env "DWF_DEFAULT_DEADLINE_SECONDS" (toString $v.config.defaultDeadlineSeconds) -}}
{{- $_ := set $env "DWF_OUTBOX_POLL_INTERVAL_SECONDS" (toString $v.config.outboxPollIntervalSeconds) -}}
{{- $_ := set $env "DWF_CONSUMER_MAX_DELIVER" (toString $v.config.consumerMaxDeliver) -}}
{{- range $k := splitList " " (include "dwf.serviceKeys" $root) }}
{{- $_ := set $env (printf "DWF_%s_ADDR" (upper $k)) (include "dwf.serviceAddr" (dict "root" $root "key" $k)) -}}
{{- end }}
{{- if $v.tls.enabled }}
{{- $_ := set $env "DWF_TLS_CERT_FILE" (printf "%s/tls.crt" $v.tls.mountPath) -}}
{{- $_ := set $env "DWF_TLS_KEY_FILE" (printf "%s/tls.key" $v.tls.mountPath) -}}
{{- if $v.tls.mutual }}
{{- $_ := set $env "DWF_TLS_CA_FILE" (printf "%s/ca.crt" $v.tls.mountPath) -}}
{{- end }}
{{- $_ := set $env "DWF_HEALTH_PORT" (toString $v.tls.healthPort) -}}
{{- end }}
{{- /* fulfillment's connectors (services/fulfillment/connectors/settings.py); tokens: Secret */}}
{{- if eq .key "fulfillment" }}
{{- range $system := list "erp" "wms" "carrier" }}
{{- with include "dwf.integrationUrl" (dict "root" $root "system" $system) }}
{{- $_ := set $env (printf "DWF_FULFILLMENT_%s_URL" (upper $system)) . -}}
{{- end }}
{{- end }}
{{- end }}
{{- /* the channel sandbox speaks plain HTTP (as in the local stack, libs/stack/supervisor.py) */}}
{{- if and (eq .key "notifications") $v.sandboxes.channel.enabled }}
{{- $_ := set $env "DWF_NOTIFY_ALLOW_HTTP" "true" -}}
{{- end }}
{{- $_ := set $env "OTEL_SERVICE_NAME" (printf "dwf-%s" $component) -}}
{{- $attrs := list "service.namespace=dwf" (printf "k8s.namespace.name=%s" $root.Release.Namespace) (printf "service.version=%s" ($v.image.tag | default $root.Chart.AppVersion)) -}}
{{- range $k, $val := $v.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $val) -}}
{{- end }}
{{- $_ := set $env "OTEL_RESOURCE_ATTRIBUTES" (join "," $attrs) -}}
{{- if $v.otel.enabled }}
{{- $_ := set $env "OTEL_TRACES_EXPORTER" $v.otel.tracesExporter -}}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_PROTOCOL" $v.otel.protocol -}}
{{- with $v.otel.endpoint }}{{ $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" . }}{{ end -}}
{{- else }}
{{- $_ := set $env "OTEL_TRACES_EXPORTER" "none" -}}
{{- end }}
{{- range $k, $val := $v.config.extraEnv }}
{{- $_ := set $env $k (toString $val) -}}
{{- end }}
{{- range $k, $val := $svc.env }}
{{- $_ := set $env $k (toString $val) -}}
{{- end }}
{{- range $k := keys $env | sortAlpha }}
{{ $k }}: {{ get $env $k | quote }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding a service's credentials. Context: dict "root" "key" */}}
{{- define "dwf.credentialsSecretName" -}}
{{- $svc := index .root.Values.services .key -}}
{{- if $svc.credentials.existingSecret -}}
{{- $svc.credentials.existingSecret -}}
{{- else -}}
{{- printf "%s-credentials" (include "dwf.objectName" (dict "root" .root "component" (include "dwf.component" .key))) -}}
{{- end -}}
{{- end }}

{{/* postgresql+asyncpg URL of a service's role (chart-managed credentials only). */}}
{{- define "dwf.databaseUrl" -}}
{{- $pg := .root.Values.externalPostgres -}}
{{- $db := (index .root.Values.services .key).credentials.database -}}
{{- $host := required "externalPostgres.host is required unless every service sets credentials.existingSecret" $pg.host -}}
{{- $url := printf "postgresql+asyncpg://%s:%s@%s:%d/%s" (urlquery $db.username) (urlquery $db.password) $host (int $pg.port) $pg.database -}}
{{- if $pg.query }}{{ $url = printf "%s?%s" $url $pg.query }}{{ end -}}
{{- $url -}}
{{- end }}

{{/* Environment variables read from a service's credentials Secret. */}}
{{- define "dwf.credentialsEnv" -}}
{{- $keys := .root.Values.credentials.keys -}}
{{- $secret := include "dwf.credentialsSecretName" . -}}
- name: DWF_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.databaseUrl }}
{{- if not .databaseOnly }}
- name: DWF_NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.natsUser }}
- name: DWF_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.natsPassword }}
{{- end }}
{{- end }}

{{/* Scheduling block shared by pods. Context: dict "root" $ "svc" <service values or {}> */}}
{{- define "dwf.scheduling" -}}
{{- $v := .root.Values -}}
{{- $out := dict -}}
{{- with (.svc.nodeSelector | default $v.nodeSelector) }}{{ $_ := set $out "nodeSelector" . }}{{ end -}}
{{- with (.svc.tolerations | default $v.tolerations) }}{{ $_ := set $out "tolerations" . }}{{ end -}}
{{- with (.svc.affinity | default $v.affinity) }}{{ $_ := set $out "affinity" . }}{{ end -}}
{{- with $v.priorityClassName }}{{ $_ := set $out "priorityClassName" . }}{{ end -}}
{{- with $v.imagePullSecrets }}{{ $_ := set $out "imagePullSecrets" . }}{{ end -}}
{{- if $out }}{{ toYaml $out }}{{ end -}}
{{- end }}

{{/* A NetworkPolicy `to:` list for an egress destination (cidrs + peers). */}}
{{- define "dwf.egressPeers" -}}
{{- range .cidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- with .peers }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "dwf.dnsEgressRule" -}}
{{- $dns := .Values.networkPolicy.egress.dns -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml $dns.podLabels | nindent 10 }}
  ports:
    - protocol: UDP
      port: {{ $dns.port }}
    - protocol: TCP
      port: {{ $dns.port }}
{{- end }}

{{/* Cross-field checks JSON schema cannot express; called from every template set. */}}
{{- define "dwf.validate" -}}
{{- $v := .Values -}}
{{- $budget := addf (float64 $v.config.shutdownGraceSeconds) (float64 $v.config.drainSeconds) (float64 $v.lifecycle.preStopSleepSeconds) -}}
{{- if le (float64 $v.terminationGracePeriodSeconds) $budget -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed lifecycle.preStopSleepSeconds + config.drainSeconds + config.shutdownGraceSeconds (%g)" (int $v.terminationGracePeriodSeconds) $budget) -}}
{{- end -}}
{{- if and $v.tls.enabled (eq (int $v.tls.healthPort) (int $v.grpc.port)) -}}
{{- fail "tls.healthPort must differ from grpc.port" -}}
{{- end -}}
{{- if eq (int $v.metrics.port) (int $v.grpc.port) -}}
{{- fail "metrics.port must differ from grpc.port" -}}
{{- end -}}
{{- range $key := splitList " " (include "dwf.serviceKeys" .) -}}
{{- $as := (index $v.services $key).autoscaling -}}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- fail (printf "services.%s.autoscaling.minReplicas (%d) exceeds maxReplicas (%d)" $key (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- range $system := list "erp" "wms" "carrier" -}}
{{- $url := index $v.integrations (printf "%sUrl" $system) -}}
{{- $token := index $v.integrations.credentials (printf "%sToken" $system) -}}
{{- if and $url (not (index $v.sandboxes $system).enabled) (not $v.integrations.credentials.existingSecret) (not $token) -}}
{{- fail (printf "integrations.%sUrl is set: give integrations.credentials.%sToken or integrations.credentials.existingSecret" $system $system) -}}
{{- end -}}
{{- end -}}
{{- if $v.networkPolicy.enabled -}}
{{- $eg := $v.networkPolicy.egress -}}
{{- if not (or $eg.postgres.cidrs $eg.postgres.peers) -}}
{{- fail "networkPolicy.egress.postgres needs cidrs or peers (or set networkPolicy.enabled=false)" -}}
{{- end -}}
{{- if not (or $eg.nats.cidrs $eg.nats.peers) -}}
{{- fail "networkPolicy.egress.nats needs cidrs or peers (or set networkPolicy.enabled=false)" -}}
{{- end -}}
{{- end -}}
{{- end }}
