"""Kubernetes manifests for a gpushare plan: a pure library of builders and writers.

Nothing here talks to a cluster or imports a Kubernetes client: builders take small frozen
dataclasses and return plain dicts, writers return text. An adapter (the `export k8s` command)
turns a plan into these inputs; /work/notes/i15-plan.md maps each mode to the objects.

- `meta`: object names, `app.kubernetes.io/*` labels, metadata, checked as the API server does;
- `gpu`: each mode's GPU resource (`nvidia.com/gpu`, `nvidia.com/mig-<profile>`, HAMi's
  `gpumem`/`gpucores`, shared replicas), the GPU product label, the device plugin's `sharing:`
  config and mig-parted's config;
- `sharing`: whether a plan survives the device plugin's equal replicas, refusing with the numbers;
- `workload`: Deployment, Service, ConfigMap, PVC; probes, volumes, the HF_TOKEN Secret reference;
- `monitoring`: ServiceMonitor, PodMonitor, PrometheusRule and the same alerts as a rules file;
- `render`: YAML documents, a multi-document stream, a kustomize directory;
- `dockerfile`: the gpushare image's Dockerfile.
"""
