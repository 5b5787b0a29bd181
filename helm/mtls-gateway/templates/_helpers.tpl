{{/*
Helpers of the mtls-gateway chart.

Helpers that an application chart may include (sidecar mode) need only .Values (the gateway's
values) and .Release, never .Chart, so they work with this context built by the parent chart:
  (dict "Values" (index .Values "mtls-gateway") "Release" .Release)
Those public helpers are:
  mtls-gateway.sidecarContainer              one container list item
  mtls-gateway.sidecarVolumes                the volumes list items it mounts
  mtls-gateway.sidecarPodAnnotations         config checksum (+ prometheus.io/* when enabled)
  mtls-gateway.terminationGracePeriodSeconds shutdown.gracePeriodSecs + 5
  mtls-gateway.serviceAccountName            the ServiceAccount the Vault role binds
Paths inside the container (one place each: the config below and the mounts further down):
  /etc/mtls-gateway/config.yaml                  ConfigMap (subPath; pods roll on the checksum)
  /etc/mtls-gateway/vault-ca/ca.crt              store.vault.caSecret
  /etc/mtls-gateway/vault-token/token            store.vault.auth.token.secretRef
  /etc/mtls-gateway/vault-approle/{role_id,secret_id}  store.vault.auth.approle.*SecretRef
  /var/run/secrets/mtls-gateway/token            projected service-account token
  /etc/mtls-gateway/upstream-ca/ca-N.crt         upstream.caSecrets[N]
  /etc/mtls-gateway/auth/{oauth1-N,jwt-key}      auth.oauth1.keys[N].secretRef, auth.jwt.keySecretRef
  /etc/mtls-gateway/notifications/webhook-N-{secret,ca.crt}  notifications.webhooks[N].secretRef, .caSecretRef
  /etc/mtls-gateway/redis/{password,ca.crt}      redis.passwordSecret, redis.caSecret or redis.caConfigMap
  /tmp                                           emptyDir
*/}}

{{/* Chart name; "mtls-gateway" is fixed here so the helper needs no .Chart. */}}
{{- define "mtls-gateway.name" -}}
{{- default "mtls-gateway" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-mtls-gateway, or the release name when it already contains the name. */}}
{{- define "mtls-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "mtls-gateway.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels (stable across upgrades). */}}
{{- define "mtls-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mtls-gateway.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{/* Common labels; uses .Chart, so only for this chart's own objects. */}}
{{- define "mtls-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
{{ include "mtls-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "mtls-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mtls-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest] */}}
{{- define "mtls-gateway.image" -}}
{{- $ref := .Values.image.repository -}}
{{- if .Values.image.tag -}}
{{- $ref = printf "%s:%s" $ref .Values.image.tag -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- $ref = printf "%s@%s" $ref .Values.image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "mtls-gateway.terminationGracePeriodSeconds" -}}
{{- add (int .Values.shutdown.gracePeriodSecs) 5 -}}
{{- end -}}

{{/* "host:port" for a listener; IPv6 literals get brackets. Argument: (list host port). */}}
{{- define "mtls-gateway.hostPort" -}}
{{- $host := index . 0 -}}
{{- if contains ":" $host -}}
{{- $host = printf "[%s]" $host -}}
{{- end -}}
{{- printf "%s:%d" $host (int (index . 1)) -}}
{{- end -}}

{{/* Proxy bind address: explicit, else loopback in sidecar mode and all interfaces standalone. */}}
{{- define "mtls-gateway.proxyBind" -}}
{{- .Values.proxy.bindAddress | default (ternary "127.0.0.1" "0.0.0.0" (eq .Values.mode "sidecar")) -}}
{{- end -}}

{{/* "true" when the proxy binds a loopback address (127.0.0.0/8 or ::1), else "". */}}
{{- define "mtls-gateway.proxyLocal" -}}
{{- $bind := include "mtls-gateway.proxyBind" . -}}
{{- if or (hasPrefix "127." $bind) (eq $bind "::1") -}}true{{- end -}}
{{- end -}}

{{/* proxy.auth: explicit, else none on loopback and required when reachable from other pods. */}}
{{- define "mtls-gateway.proxyAuth" -}}
{{- .Values.proxy.auth | default (ternary "none" "required" (eq (include "mtls-gateway.proxyLocal" .) "true")) -}}
{{- end -}}

{{/* "true" when any proxy caller credential is configured. */}}
{{- define "mtls-gateway.authConfigured" -}}
{{- if or .Values.auth.oauth1.keys .Values.auth.jwt.enabled -}}true{{- end -}}
{{- end -}}

{{/* Fewest and most pods of the standalone Deployment: the HPA's bounds, else replicaCount. */}}
{{- define "mtls-gateway.minReplicas" -}}
{{- ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled | int -}}
{{- end -}}

{{- define "mtls-gateway.maxReplicas" -}}
{{- ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled | int -}}
{{- end -}}

{{/* The Redis URLs as a list (url, or urls); empty when neither is set. */}}
{{- define "mtls-gateway.redisUrls" -}}
{{- if .Values.redis.url -}}
{{- list .Values.redis.url | toJson -}}
{{- else -}}
{{- .Values.redis.urls | default list | toJson -}}
{{- end -}}
{{- end -}}

{{/* "true" when redis is enabled and the pod mounts a password or CA file for it, else "". */}}
{{- define "mtls-gateway.redisFiles" -}}
{{- $r := .Values.redis -}}
{{- if and $r.enabled (or $r.passwordSecret.name $r.caSecret.name $r.caConfigMap.name) -}}true{{- end -}}
{{- end -}}

{{/*
Fails the render with a message that names the key and the fix. The schema catches most mistakes;
these are the cross-field rules.
*/}}
{{- define "mtls-gateway.validate" -}}
{{- if not (has .Values.mode (list "standalone" "sidecar")) -}}
{{- fail (printf "mode: %q is not standalone or sidecar" .Values.mode) -}}
{{- end -}}
{{- if eq .Values.store.kind "vault" -}}
{{- $method := .Values.store.vault.auth.method -}}
{{- if .Values.store.vault.caSecret.name -}}
{{- range (.Values.store.vault.addresses | default (list .Values.store.vault.address)) -}}
{{- if hasPrefix "http://" . -}}
{{- fail (printf "store.vault.caSecret is set but the Vault address %s is plain http:// (the gateway refuses that): use https:// or remove caSecret" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq $method "token") (not .Values.store.vault.auth.token.secretRef.name) -}}
{{- fail "store.vault.auth.method is token: set store.vault.auth.token.secretRef.name to an existing Secret holding the Vault token" -}}
{{- end -}}
{{- if and (eq $method "approle") (not (and .Values.store.vault.auth.approle.roleIdSecretRef.name .Values.store.vault.auth.approle.secretIdSecretRef.name)) -}}
{{- fail "store.vault.auth.method is approle: set store.vault.auth.approle.roleIdSecretRef.name and secretIdSecretRef.name to existing Secrets" -}}
{{- end -}}
{{- if and (eq $method "kubernetes") (eq .Values.mode "standalone") (not .Values.serviceAccount.automountToken) (not .Values.store.vault.auth.kubernetes.projectedToken.enabled) -}}
{{- fail "store.vault.auth.method is kubernetes but serviceAccount.automountToken is false: set it true or enable store.vault.auth.kubernetes.projectedToken" -}}
{{- end -}}
{{- end -}}
{{- if and (eq (include "mtls-gateway.proxyAuth" .) "none") (ne (include "mtls-gateway.proxyLocal" .) "true") -}}
{{- fail (printf "proxy.auth is none but the proxy listens on %s, not loopback (the gateway refuses that): set proxy.auth: required (or \"\") and configure auth.oauth1.keys or auth.jwt" (include "mtls-gateway.proxyBind" .)) -}}
{{- end -}}
{{- if and .Values.admin.console.enabled (not .Values.auth.jwt.enabled) -}}
{{- fail "admin.console.enabled: the console signs in with a Bearer JWT the admin API accepts; set auth.jwt.enabled (and auth.jwt.keySecretRef) or admin.console.enabled: false" -}}
{{- end -}}
{{- if and .Values.auth.jwt.enabled (not .Values.auth.jwt.keySecretRef.name) -}}
{{- fail "auth.jwt.enabled: set auth.jwt.keySecretRef.name to an existing Secret holding the key" -}}
{{- end -}}
{{- if and .Values.auth.jwt.enabled (not (and .Values.auth.jwt.issuer .Values.auth.jwt.audience)) -}}
{{- fail "auth.jwt.enabled: set auth.jwt.issuer (the iss your token issuer writes) and auth.jwt.audience (the aud your tokens carry for this gateway); the gateway refuses JWT settings without them" -}}
{{- end -}}
{{- if and .Values.auth.jwt.enabled .Values.auth.jwt.jwks (eq .Values.auth.jwt.algorithm "HS256") -}}
{{- fail "auth.jwt.jwks is true but HS256 uses a shared secret: set auth.jwt.jwks: false or use RS256/ES256" -}}
{{- end -}}
{{- if and (eq .Values.unmapped.policy "refuse") .Values.unmapped.plainTlsHosts -}}
{{- fail "unmapped.plainTlsHosts is set but unmapped.policy is refuse: set policy: plain_tls or empty the list" -}}
{{- end -}}
{{- if and (eq .Values.unmapped.policy "plain_tls") (not .Values.unmapped.plainTlsHosts) -}}
{{- fail "unmapped.policy is plain_tls: list the hosts in unmapped.plainTlsHosts" -}}
{{- end -}}
{{- if and (not .Values.upstream.useSystemRoots) (not .Values.upstream.caSecrets) -}}
{{- fail "upstream.useSystemRoots is false and upstream.caSecrets is empty: no partner server could be verified" -}}
{{- end -}}
{{- if and (eq .Values.store.kind "file") (eq .Values.mode "standalone") (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) -}}
{{- fail "store.kind is file: the file store lives in one pod's volume; set replicaCount: 1 and autoscaling.enabled: false, or use store.kind: vault" -}}
{{- end -}}
{{- if .Values.autoscaling.enabled -}}
{{- if eq .Values.mode "sidecar" -}}
{{- fail "autoscaling.enabled scales the standalone Deployment; in sidecar mode the application's chart owns the pods and their autoscaler: set autoscaling.enabled: false" -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d): raise maxReplicas" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if not (dig "requests" "cpu" "" (.Values.resources | default dict)) -}}
{{- fail "autoscaling.enabled scales on CPU utilization, a share of the CPU request: set resources.requests.cpu" -}}
{{- end -}}
{{- end -}}
{{- if dig "lifecycle" "replica_id" "" (.Values.extraConfig | default dict) -}}
{{- fail "extraConfig.lifecycle.replica_id: every pod of the release reads the one ConfigMap, so all would share this id and take each other's renewal leases; remove it (each pod uses its own pod name and process id)" -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- if eq .name "HOSTNAME" -}}
{{- fail "extraEnv sets HOSTNAME: the gateway names each pod in renewal leases and notifications by it (the pod name by default), and pods sharing one name take each other's leases; remove it" -}}
{{- end -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- $r := .Values.redis -}}
{{- if and $r.url $r.urls -}}
{{- fail "redis.url and redis.urls are both set: use url for one server, urls (with redis.cluster: true) for a Redis Cluster's seed nodes" -}}
{{- end -}}
{{- if not (or $r.url $r.urls) -}}
{{- fail "redis.enabled is true but no server is named: set redis.url (one server, e.g. redis://redis:6379, or rediss:// for TLS) or redis.urls with redis.cluster: true (a Redis Cluster's seed nodes)" -}}
{{- end -}}
{{- if and $r.urls (not $r.cluster) -}}
{{- fail "redis.urls lists a Redis Cluster's seed nodes but redis.cluster is false: set redis.cluster: true, or use redis.url for one server" -}}
{{- end -}}
{{- $urls := include "mtls-gateway.redisUrls" . | fromJsonArray -}}
{{- $tls := hasPrefix "rediss://" (first $urls) -}}
{{- range $urls -}}
{{- if ne (hasPrefix "rediss://" .) $tls -}}
{{- fail "redis.urls mixes redis:// and rediss://: use one scheme for every node" -}}
{{- end -}}
{{- if and $r.cluster (regexMatch "^rediss?://[^/]+/0*[1-9]" .) -}}
{{- fail (printf "redis: %s names a database, but a Redis Cluster has only database 0: remove the path" .) -}}
{{- end -}}
{{- end -}}
{{- if and $r.username (not $r.passwordSecret.name) -}}
{{- fail "redis.username is set without a password: set redis.passwordSecret.name (and key) to an existing Secret holding the password" -}}
{{- end -}}
{{- if and $r.caSecret.name $r.caConfigMap.name -}}
{{- fail "redis.caSecret.name and redis.caConfigMap.name are both set: the server CA comes from one of them, keep one" -}}
{{- end -}}
{{- if and (or $r.caSecret.name $r.caConfigMap.name) (not $tls) -}}
{{- fail "redis.caSecret / redis.caConfigMap (the Redis server's CA) is only used with TLS: write redis.url or redis.urls as rediss://, or remove the CA" -}}
{{- end -}}
{{- end -}}
{{- range $i, $w := .Values.notifications.webhooks -}}
{{- if not (and $w.secretRef $w.secretRef.name) -}}
{{- fail (printf "notifications.webhooks[%d]: set secretRef.name (and key) to an existing Secret holding the HMAC key; the key is never given inline" $i) -}}
{{- end -}}
{{- if and (hasPrefix "http://" $w.url) (not $w.allowInsecure) (not (or (hasPrefix "http://127." $w.url) (hasPrefix "http://localhost" $w.url) (hasPrefix "http://[::1]" $w.url))) -}}
{{- fail (printf "notifications.webhooks[%d].url is plain http:// to a host that is not loopback (the gateway refuses that): use https://, or set allowInsecure: true" $i) -}}
{{- end -}}
{{- end -}}
{{- if and (lt (int .Values.lifecycle.retryMaxSecs) (int .Values.lifecycle.retryMinSecs)) -}}
{{- fail "lifecycle.retryMaxSecs is below lifecycle.retryMinSecs (the gateway refuses that): raise it" -}}
{{- end -}}
{{- if and .Values.podMonitor.enabled (eq .Values.mode "sidecar") (not .Values.podMonitor.selector) -}}
{{- fail "podMonitor.enabled in sidecar mode: set podMonitor.selector to labels of the application pods" -}}
{{- end -}}
{{- end -}}

{{/*
The gateway's YAML config, built in this one place from the values. Keys are the config file's
snake_case names; optional keys are left out when their value is empty.
*/}}
{{- define "mtls-gateway.config" -}}
{{- $proxyBind := include "mtls-gateway.proxyBind" . -}}
{{- $proxy := dict
      "listen" (list (include "mtls-gateway.hostPort" (list $proxyBind .Values.proxy.port)))
      "allow_remote" (ne (include "mtls-gateway.proxyLocal" .) "true")
      "threads" (int .Values.proxy.threads)
      "account_header" .Values.proxy.accountHeader
      "service_header" .Values.proxy.serviceHeader
      "access_log" .Values.proxy.accessLog
      "auth" (include "mtls-gateway.proxyAuth" .) -}}
{{- if .Values.proxy.defaultAccount -}}
{{- $_ := set $proxy "default_account" .Values.proxy.defaultAccount -}}
{{- end -}}
{{- if .Values.proxy.defaultService -}}
{{- $_ := set $proxy "default_service" .Values.proxy.defaultService -}}
{{- end -}}
{{- $admin := dict
      "listen" (include "mtls-gateway.hostPort" (list (ternary "0.0.0.0" "127.0.0.1" .Values.admin.expose) .Values.admin.port))
      "allow_remote" .Values.admin.expose -}}
{{- with .Values.admin.console -}}
{{- if .enabled -}}
{{- $_ := set $admin "console" (dict "enabled" true "cookie_secure" (.cookieSecure | default "auto") "session_max_secs" (.sessionMaxSecs | default 28800 | int)) -}}
{{- end -}}
{{- end -}}
{{- $ops := dict
      "listen" (include "mtls-gateway.hostPort" (list "0.0.0.0" .Values.ops.port))
      "allow_remote" true -}}
{{- $store := dict "kind" .Values.store.kind -}}
{{- if eq .Values.store.kind "vault" -}}
{{- $method := .Values.store.vault.auth.method -}}
{{- $auth := dict "method" $method -}}
{{- if eq $method "kubernetes" -}}
{{- $_ := set $auth "role" .Values.store.vault.auth.kubernetes.role -}}
{{- $_ := set $auth "mount" .Values.store.vault.auth.kubernetes.mount -}}
{{- $_ := set $auth "token_file" (ternary "/var/run/secrets/mtls-gateway/token" .Values.store.vault.auth.kubernetes.tokenFile .Values.store.vault.auth.kubernetes.projectedToken.enabled) -}}
{{- else if eq $method "token" -}}
{{- $_ := set $auth "token_file" "/etc/mtls-gateway/vault-token/token" -}}
{{- else if eq $method "approle" -}}
{{- $_ := set $auth "mount" .Values.store.vault.auth.approle.mount -}}
{{- $_ := set $auth "role_id_file" "/etc/mtls-gateway/vault-approle/role_id" -}}
{{- $_ := set $auth "secret_id_file" "/etc/mtls-gateway/vault-approle/secret_id" -}}
{{- else if eq $method "aws" -}}
{{- $aws := .Values.store.vault.auth.aws -}}
{{- $_ := set $auth "role" $aws.role -}}
{{- $_ := set $auth "mount" $aws.mount -}}
{{- $_ := set $auth "region" $aws.region -}}
{{- if $aws.iamServerIdHeaderValue -}}
{{- $_ := set $auth "iam_server_id_header_value" $aws.iamServerIdHeaderValue -}}
{{- end -}}
{{- if $aws.stsEndpoint -}}
{{- $_ := set $auth "sts_endpoint" $aws.stsEndpoint -}}
{{- end -}}
{{- end -}}
{{- $vault := dict
      "kv_version" (int .Values.store.vault.kvVersion)
      "mount" .Values.store.vault.mount
      "prefix" .Values.store.vault.prefix
      "auth" $auth -}}
{{- if .Values.store.vault.addresses -}}
{{- $_ := set $vault "addresses" .Values.store.vault.addresses -}}
{{- else -}}
{{- $_ := set $vault "address" .Values.store.vault.address -}}
{{- end -}}
{{- if .Values.store.vault.namespace -}}
{{- $_ := set $vault "namespace" .Values.store.vault.namespace -}}
{{- end -}}
{{- if .Values.store.vault.caSecret.name -}}
{{- $_ := set $vault "ca_file" "/etc/mtls-gateway/vault-ca/ca.crt" -}}
{{- end -}}
{{- $_ := set $store "vault" $vault -}}
{{- else -}}
{{- /* The store lives in a subdirectory the gateway creates with mode 0700: the volume's own
       root belongs to root and fsGroup (2775 on most volume types), too open for keys. */ -}}
{{- $_ := set $store "path" (printf "%s/store" (trimSuffix "/" .Values.store.file.path)) -}}
{{- end -}}
{{- $caFiles := list -}}
{{- range $i, $ref := .Values.upstream.caSecrets -}}
{{- $caFiles = append $caFiles (printf "/etc/mtls-gateway/upstream-ca/ca-%d.crt" $i) -}}
{{- end -}}
{{- $cfg := dict
      "proxy" $proxy
      "admin" $admin
      "ops" $ops
      "store" $store
      "refresh" (dict "interval_secs" (int .Values.refresh.intervalSecs))
      "rate_limit" (dict
          "requests_per_second" (int .Values.rateLimit.requestsPerSecond)
          "trusted_proxies" .Values.rateLimit.trustedProxies
          "forwarded_header" .Values.rateLimit.forwardedHeader)
      "upstream" (dict
          "ca_files" $caFiles
          "use_system_roots" .Values.upstream.useSystemRoots
          "connect_timeout_ms" (int .Values.upstream.connectTimeoutMs)
          "tls_timeout_ms" (int .Values.upstream.tlsTimeoutMs)
          "read_timeout_ms" (int .Values.upstream.readTimeoutMs)
          "idle_timeout_secs" (int .Values.upstream.idleTimeoutSecs))
      "unmapped" (dict
          "policy" .Values.unmapped.policy
          "plain_tls_hosts" .Values.unmapped.plainTlsHosts)
      "shutdown" (dict "grace_period_secs" (int .Values.shutdown.gracePeriodSecs)) -}}
{{- $lc := .Values.lifecycle -}}
{{- $_ := set $cfg "lifecycle" (dict
      "enabled" $lc.enabled
      "renew_at" $lc.renewAt
      "jitter" $lc.jitter
      "check_interval_secs" (int $lc.checkIntervalSecs)
      "lease_secs" (int $lc.leaseSecs)
      "retry_min_secs" (int $lc.retryMinSecs)
      "retry_max_secs" (int $lc.retryMaxSecs)
      "cutover_check" $lc.cutoverCheck) -}}
{{- $hooks := list -}}
{{- range $i, $w := .Values.notifications.webhooks -}}
{{- $hook := dict "url" $w.url "secret_file" (printf "/etc/mtls-gateway/notifications/webhook-%d-secret" $i) -}}
{{- if $w.name -}}
{{- $_ := set $hook "name" $w.name -}}
{{- end -}}
{{- if and $w.caSecretRef (($w.caSecretRef | default dict).name) -}}
{{- $_ := set $hook "ca_file" (printf "/etc/mtls-gateway/notifications/webhook-%d-ca.crt" $i) -}}
{{- end -}}
{{- if $w.allowInsecure -}}
{{- $_ := set $hook "allow_insecure" true -}}
{{- end -}}
{{- $hooks = append $hooks $hook -}}
{{- end -}}
{{- $days := list -}}
{{- range .Values.notifications.expiryDays -}}
{{- $days = append $days (int .) -}}
{{- end -}}
{{- $_ := set $cfg "notifications" (dict
      "webhooks" $hooks
      "expiry_days" $days
      "timeout_ms" (int .Values.notifications.timeoutMs)
      "max_attempts" (int .Values.notifications.maxAttempts)
      "retry_min_ms" (int .Values.notifications.retryMinMs)
      "retry_max_secs" (int .Values.notifications.retryMaxSecs)) -}}
{{- if include "mtls-gateway.authConfigured" . -}}
{{- $keys := list -}}
{{- range $i, $k := .Values.auth.oauth1.keys -}}
{{- $keys = append $keys (dict
      "key" $k.key
      "secret_file" (printf "/etc/mtls-gateway/auth/oauth1-%d" $i)
      "accounts" ($k.accounts | default list)
      "internal" ($k.internal | default false)) -}}
{{- end -}}
{{- $authCfg := dict "oauth1" (dict
      "timestamp_window_secs" (int .Values.auth.oauth1.timestampWindowSecs)
      "nonce_cache_capacity" (int .Values.auth.oauth1.nonceCacheCapacity)
      "trust_forwarded_proto" .Values.auth.oauth1.trustForwardedProto
      "keys" $keys) -}}
{{- if .Values.auth.jwt.enabled -}}
{{- $keyField := ternary "secret_file" (ternary "jwks_file" "public_key_file" .Values.auth.jwt.jwks) (eq .Values.auth.jwt.algorithm "HS256") -}}
{{- $jwt := dict
      "algorithm" .Values.auth.jwt.algorithm
      $keyField "/etc/mtls-gateway/auth/jwt-key"
      "account_claim" .Values.auth.jwt.accountClaim
      "roles_claim" .Values.auth.jwt.rolesClaim
      "admin_role" .Values.auth.jwt.adminRole
      "leeway_secs" (int .Values.auth.jwt.leewaySecs) -}}
{{- $_ := set $jwt "issuer" .Values.auth.jwt.issuer -}}
{{- $_ := set $jwt "audience" .Values.auth.jwt.audience -}}
{{- $_ := set $authCfg "jwt" $jwt -}}
{{- end -}}
{{- $_ := set $cfg "auth" $authCfg -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- $r := .Values.redis -}}
{{- $redis := dict
      "cluster" $r.cluster
      "key_prefix" $r.keyPrefix
      "connect_timeout_ms" (int $r.connectTimeoutMs)
      "command_timeout_ms" (int $r.commandTimeoutMs)
      "retry_secs" (int $r.retrySecs) -}}
{{- if $r.url -}}
{{- $_ := set $redis "url" $r.url -}}
{{- else -}}
{{- $_ := set $redis "urls" $r.urls -}}
{{- end -}}
{{- if $r.username -}}
{{- $_ := set $redis "username" $r.username -}}
{{- end -}}
{{- if $r.passwordSecret.name -}}
{{- $_ := set $redis "password_file" "/etc/mtls-gateway/redis/password" -}}
{{- end -}}
{{- if or $r.caSecret.name $r.caConfigMap.name -}}
{{- $_ := set $redis "tls_ca_file" "/etc/mtls-gateway/redis/ca.crt" -}}
{{- end -}}
{{- $_ := set $cfg "redis" $redis -}}
{{- end -}}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy .Values.extraConfig) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Pod annotations: config checksum (rolls pods when the config changes) and scrape hints. */}}
{{- define "mtls-gateway.podAnnotations" -}}
checksum/mtls-gateway-config: {{ include "mtls-gateway.config" . | sha256sum | quote }}
{{- if .Values.ops.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ops.port | int | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* The gateway container, as one list item. Used by the Deployment and by sidecar users. */}}
{{- define "mtls-gateway.container" -}}
- name: {{ .Values.containerName | quote }}
  image: {{ include "mtls-gateway.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy | quote }}
  {{- if and (eq .Values.mode "sidecar") .Values.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  command: ["/usr/local/bin/mtls-gateway"]
  args: ["run", "--config", "/etc/mtls-gateway/config.yaml"]
  env:
    - name: RUST_LOG
      value: {{ .Values.logLevel | quote }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: mtls-proxy
      containerPort: {{ .Values.proxy.port | int }}
      protocol: TCP
    {{- if .Values.admin.expose }}
    - name: mtls-admin
      containerPort: {{ .Values.admin.port | int }}
      protocol: TCP
    {{- end }}
    - name: mtls-metrics
      containerPort: {{ .Values.ops.port | int }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /live
      port: mtls-metrics
    initialDelaySeconds: {{ .Values.probes.liveness.initialDelaySeconds | int }}
    periodSeconds: {{ .Values.probes.liveness.periodSeconds | int }}
    timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds | int }}
    failureThreshold: {{ .Values.probes.liveness.failureThreshold | int }}
  readinessProbe:
    httpGet:
      path: /ready
      port: mtls-metrics
    initialDelaySeconds: {{ .Values.probes.readiness.initialDelaySeconds | int }}
    periodSeconds: {{ .Values.probes.readiness.periodSeconds | int }}
    timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds | int }}
    failureThreshold: {{ .Values.probes.readiness.failureThreshold | int }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: mtls-gateway-config
      mountPath: /etc/mtls-gateway/config.yaml
      subPath: config.yaml
      readOnly: true
    - name: mtls-gateway-tmp
      mountPath: /tmp
    {{- if eq .Values.store.kind "vault" }}
    {{- if .Values.store.vault.caSecret.name }}
    - name: mtls-gateway-vault-ca
      mountPath: /etc/mtls-gateway/vault-ca
      readOnly: true
    {{- end }}
    {{- if eq .Values.store.vault.auth.method "token" }}
    - name: mtls-gateway-vault-token
      mountPath: /etc/mtls-gateway/vault-token
      readOnly: true
    {{- else if eq .Values.store.vault.auth.method "approle" }}
    - name: mtls-gateway-vault-approle
      mountPath: /etc/mtls-gateway/vault-approle
      readOnly: true
    {{- else if .Values.store.vault.auth.kubernetes.projectedToken.enabled }}
    - name: mtls-gateway-sa-token
      mountPath: /var/run/secrets/mtls-gateway
      readOnly: true
    {{- end }}
    {{- else }}
    - name: mtls-gateway-data
      mountPath: {{ .Values.store.file.path | quote }}
    {{- end }}
    {{- if .Values.upstream.caSecrets }}
    - name: mtls-gateway-upstream-ca
      mountPath: /etc/mtls-gateway/upstream-ca
      readOnly: true
    {{- end }}
    {{- if include "mtls-gateway.authConfigured" . }}
    - name: mtls-gateway-auth
      mountPath: /etc/mtls-gateway/auth
      readOnly: true
    {{- end }}
    {{- if .Values.notifications.webhooks }}
    - name: mtls-gateway-notifications
      mountPath: /etc/mtls-gateway/notifications
      readOnly: true
    {{- end }}
    {{- if include "mtls-gateway.redisFiles" . }}
    - name: mtls-gateway-redis
      mountPath: /etc/mtls-gateway/redis
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The volumes the container mounts, as list items (names prefixed to avoid clashes in a shared pod). */}}
{{- define "mtls-gateway.volumes" -}}
- name: mtls-gateway-config
  configMap:
    name: {{ include "mtls-gateway.fullname" . | quote }}
- name: mtls-gateway-tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpVolume.sizeLimit | quote }}
{{- if eq .Values.store.kind "vault" }}
{{- if .Values.store.vault.caSecret.name }}
- name: mtls-gateway-vault-ca
  secret:
    secretName: {{ .Values.store.vault.caSecret.name | quote }}
    items:
      - key: {{ .Values.store.vault.caSecret.key | quote }}
        path: ca.crt
{{- end }}
{{- if eq .Values.store.vault.auth.method "token" }}
- name: mtls-gateway-vault-token
  secret:
    secretName: {{ .Values.store.vault.auth.token.secretRef.name | quote }}
    items:
      - key: {{ .Values.store.vault.auth.token.secretRef.key | quote }}
        path: token
{{- else if eq .Values.store.vault.auth.method "approle" }}
- name: mtls-gateway-vault-approle
  projected:
    sources:
      - secret:
          name: {{ .Values.store.vault.auth.approle.roleIdSecretRef.name | quote }}
          items:
            - key: {{ .Values.store.vault.auth.approle.roleIdSecretRef.key | quote }}
              path: role_id
      - secret:
          name: {{ .Values.store.vault.auth.approle.secretIdSecretRef.name | quote }}
          items:
            - key: {{ .Values.store.vault.auth.approle.secretIdSecretRef.key | quote }}
              path: secret_id
{{- else if .Values.store.vault.auth.kubernetes.projectedToken.enabled }}
- name: mtls-gateway-sa-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .Values.store.vault.auth.kubernetes.projectedToken.audience | quote }}
          expirationSeconds: {{ .Values.store.vault.auth.kubernetes.projectedToken.expirationSeconds | int }}
          path: token
{{- end }}
{{- else }}
- name: mtls-gateway-data
  {{- if .Values.store.file.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.store.file.existingClaim | quote }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- if .Values.upstream.caSecrets }}
- name: mtls-gateway-upstream-ca
  projected:
    sources:
      {{- range $i, $ref := .Values.upstream.caSecrets }}
      - secret:
          name: {{ $ref.name | quote }}
          items:
            - key: {{ $ref.key | quote }}
              path: {{ printf "ca-%d.crt" $i | quote }}
      {{- end }}
{{- end }}
{{- if include "mtls-gateway.authConfigured" . }}
- name: mtls-gateway-auth
  projected:
    sources:
      {{- range $i, $k := .Values.auth.oauth1.keys }}
      - secret:
          name: {{ $k.secretRef.name | quote }}
          items:
            - key: {{ $k.secretRef.key | quote }}
              path: {{ printf "oauth1-%d" $i | quote }}
      {{- end }}
      {{- if .Values.auth.jwt.enabled }}
      - secret:
          name: {{ .Values.auth.jwt.keySecretRef.name | quote }}
          items:
            - key: {{ .Values.auth.jwt.keySecretRef.key | quote }}
              path: jwt-key
      {{- end }}
{{- end }}
{{- if .Values.notifications.webhooks }}
- name: mtls-gateway-notifications
  projected:
    sources:
      {{- range $i, $w := .Values.notifications.webhooks }}
      {{- $ref := $w.secretRef | default dict }}
      - secret:
          name: {{ $ref.name | quote }}
          items:
            - key: {{ $ref.key | quote }}
              path: {{ printf "webhook-%d-secret" $i | quote }}
      {{- if and $w.caSecretRef (($w.caSecretRef | default dict).name) }}
      - secret:
          name: {{ $w.caSecretRef.name | quote }}
          items:
            - key: {{ $w.caSecretRef.key | quote }}
              path: {{ printf "webhook-%d-ca.crt" $i | quote }}
      {{- end }}
      {{- end }}
{{- end }}
{{- if include "mtls-gateway.redisFiles" . }}
- name: mtls-gateway-redis
  projected:
    sources:
      {{- with .Values.redis.passwordSecret }}
      {{- if .name }}
      - secret:
          name: {{ .name | quote }}
          items:
            - key: {{ .key | quote }}
              path: password
      {{- end }}
      {{- end }}
      {{- if .Values.redis.caSecret.name }}
      - secret:
          name: {{ .Values.redis.caSecret.name | quote }}
          items:
            - key: {{ .Values.redis.caSecret.key | quote }}
              path: ca.crt
      {{- else if .Values.redis.caConfigMap.name }}
      - configMap:
          name: {{ .Values.redis.caConfigMap.name | quote }}
          items:
            - key: {{ .Values.redis.caConfigMap.key | quote }}
              path: ca.crt
      {{- end }}
{{- end }}
{{- end -}}

{{/* Public names for application charts (sidecar mode). See the comment at the top. */}}
{{- define "mtls-gateway.sidecarContainer" -}}
{{- include "mtls-gateway.container" . -}}
{{- end -}}

{{- define "mtls-gateway.sidecarVolumes" -}}
{{- include "mtls-gateway.volumes" . -}}
{{- end -}}

{{- define "mtls-gateway.sidecarPodAnnotations" -}}
{{- include "mtls-gateway.podAnnotations" . -}}
{{- end -}}
