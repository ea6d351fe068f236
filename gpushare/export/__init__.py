"""Exports of gpushare's plans to other systems (today: Kubernetes manifests, in `k8s`)."""
