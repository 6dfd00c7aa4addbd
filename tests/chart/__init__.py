"""The Helm chart and the Dockerfile, with the pinned helm, kubernetes-validate, checkov and
hadolint."""
