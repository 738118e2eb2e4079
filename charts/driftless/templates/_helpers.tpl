{{/*
Names. Namespaced objects are named after the controller (Flux's names) plus "-<nameOverride>",
so that shard releases in one namespace do not clash; cluster-scoped objects (ClusterRoles and
their bindings) carry the release namespace as well, so that releases in different namespaces
do not either.
*/}}
{{- define "driftless.suffix" -}}
{{- with .Values.nameOverride }}-{{ . }}{{ end -}}
{{- end -}}

{{- define "driftless.source.name" -}}
{{- printf "%s%s" .Values.sourceController.name (include "driftless.suffix" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "driftless.apply.name" -}}
{{- printf "%s%s" .Values.applyController.name (include "driftless.suffix" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "driftless.clusterName" (list $ NAME): a cluster-scoped name unique per release namespace. */}}
{{- define "driftless.clusterName" -}}
{{- $ := index . 0 -}}
{{- printf "driftless-%s-%s" (index . 1) $.Release.Namespace | trunc 253 -}}
{{- end -}}

{{- define "driftless.source.serviceAccountName" -}}
{{- if .Values.sourceController.serviceAccount.create -}}
{{- default (include "driftless.source.name" .) .Values.sourceController.serviceAccount.name -}}
{{- else -}}
{{- required "sourceController.serviceAccount.name is required when serviceAccount.create is false" .Values.sourceController.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "driftless.apply.serviceAccountName" -}}
{{- if .Values.applyController.serviceAccount.create -}}
{{- default (include "driftless.apply.name" .) .Values.applyController.serviceAccount.name -}}
{{- else -}}
{{- required "applyController.serviceAccount.name is required when serviceAccount.create is false" .Values.applyController.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "driftless.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: driftless
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/*
"driftless.selectorLabels" (list $ NAME): what a controller's pods are selected by (Deployment,
Services, NetworkPolicies). The instance label tells the releases (shards) apart.
*/}}
{{- define "driftless.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $.Release.Name }}
{{- end -}}

{{/* "driftless.componentLabels" (list $ NAME): the common labels plus the selector labels. */}}
{{- define "driftless.componentLabels" -}}
{{ include "driftless.labels" (index . 0) }}
{{ include "driftless.selectorLabels" . }}
{{- end -}}

{{- define "driftless.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The --watch-label-selector both controllers get: watchLabelSelector verbatim, else this release's
shard key, else the other shards' keys excluded (Flux's sharding convention), else none.
*/}}
{{- define "driftless.watchLabelSelector" -}}
{{- if .Values.watchLabelSelector -}}
{{- .Values.watchLabelSelector -}}
{{- else if .Values.sharding.key -}}
{{- printf "sharding.fluxcd.io/key=%s" .Values.sharding.key -}}
{{- else if .Values.sharding.shards -}}
{{- printf "sharding.fluxcd.io/key notin (%s)" (join ", " .Values.sharding.shards) -}}
{{- end -}}
{{- end -}}

{{/* The artifact Service's DNS name, which the source-controller advertises in artifact URLs. */}}
{{- define "driftless.source.advertisedHost" -}}
{{- printf "%s.%s.svc.%s." (include "driftless.source.name" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* Flags both controllers take, from the shared values. */}}
{{- define "driftless.commonArgs" -}}
- --log-level={{ .Values.logLevel }}
- --log-encoding={{ .Values.logEncoding }}
- --watch-all-namespaces={{ .Values.watchAllNamespaces }}
{{- with include "driftless.watchLabelSelector" . }}
- --watch-label-selector={{ . }}
{{- end }}
{{- with .Values.eventsAddr }}
- --events-addr={{ . }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
- --enable-leader-election
- --leader-election-lease-duration={{ .Values.leaderElection.leaseDuration }}
- --leader-election-renew-deadline={{ .Values.leaderElection.renewDeadline }}
{{- end }}
{{- if .Values.spiffe.enabled }}
{{- range .Values.spiffe.authorizedEventServers }}
- --authorized-event-server-spiffe-id={{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment both controllers get: their namespace, for the Lease and --watch-all-namespaces=false. */}}
{{- define "driftless.commonEnv" -}}
- name: RUNTIME_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if .Values.spiffe.enabled }}
- name: SPIFFE_ENDPOINT_SOCKET
  value: unix:///spiffe-workload-api/{{ .Values.spiffe.socketName }}
{{- end }}
{{- end -}}

{{/* The SPIFFE Workload API socket's volume and its mount, when spiffe.enabled. */}}
{{- define "driftless.spiffeVolume" -}}
{{- if .Values.spiffe.enabled }}
- name: spiffe-workload-api
  {{- toYaml .Values.spiffe.volume | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "driftless.spiffeVolumeMount" -}}
{{- if .Values.spiffe.enabled }}
- name: spiffe-workload-api
  mountPath: /spiffe-workload-api
  readOnly: true
{{- end }}
{{- end -}}

{{/* "driftless.tmpVolume" SIZE_LIMIT: the /tmp emptyDir. */}}
{{- define "driftless.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with . }}
    sizeLimit: {{ . }}
    {{- else }} {}
    {{- end }}
{{- end -}}

{{/*
"driftless.leaseRole" (list $ NAME SERVICEACCOUNT): the Role and RoleBinding for a controller's
leader-election Lease.
*/}}
{{- define "driftless.leaseRole" -}}
{{- $ := index . 0 -}}
{{- $name := index . 1 -}}
{{- $sa := index . 2 }}
# Leader election: the Lease lives in the release namespace. Its name depends on the selector
# (hashed when sharded) and create cannot be limited by name, so the rule covers every Lease of
# the namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}-leader-election
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "driftless.componentLabels" (list $ $name) | nindent 4 }}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}-leader-election
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "driftless.componentLabels" (list $ $name) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}-leader-election
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ $.Release.Namespace }}
{{- end -}}

{{/* `--feature-gates` value from a {Name: bool} map: Name=true,Other=false (sorted). */}}
{{- define "driftless.featureGates" -}}
{{- $gates := list -}}
{{- range $name, $on := . -}}
{{- $gates = append $gates (printf "%s=%t" $name $on) -}}
{{- end -}}
{{- join "," $gates -}}
{{- end -}}
