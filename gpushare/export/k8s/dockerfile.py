"""The Dockerfile of the gpushare image: the vLLM image of the modelled version, plus gpushare.

One image for every workload of an export: gpu-pod pods run `gpushare up` (which starts `vllm
serve` and MPS inside), plain modes run `vllm serve` directly, the gateway runs `gpushare gateway`.
gpushare is installed with the image's own package versions as constraints, so nothing vLLM
depends on is upgraded or downgraded by it (a change there would be a different vLLM than the one
the plan models). The vLLM images install with `uv pip install --system` on top of pip, so
`python3 -m pip` is there (vLLM's docker/Dockerfile).
"""

from __future__ import annotations

import re

from gpushare.errors import InputError

VLLM_IMAGE = "vllm/vllm-openai"


def vllm_image(vllm_version: str) -> str:
    """`vllm/vllm-openai:v<version>` (the tags of vLLM's own images carry a `v`)."""
    if re.fullmatch(r"\d+\.\d+\.\d+", vllm_version) is None:
        raise InputError(
            f"vLLM version {vllm_version!r}: the image tag needs a full version such as 0.26.0",
            hint="set defaults.vllm_version to major.minor.patch",
        )
    return f"{VLLM_IMAGE}:v{vllm_version}"


def dockerfile(vllm_version: str, *, source: str = ".") -> str:
    """The Dockerfile text; build it from a gpushare checkout (`source`, relative to the context)."""
    base = vllm_image(vllm_version)
    return (
        "# The gpushare image: vLLM's own image of the version the plan models, plus gpushare.\n"
        "# Build from a gpushare checkout:  docker build -f Dockerfile -t gpushare:latest .\n"
        f"FROM {base}\n"
        f"COPY {source} /opt/gpushare-src\n"
        "# Keep every package the image has at its version: vLLM must stay the one that was planned.\n"
        "RUN python3 -m pip list --format=freeze > /tmp/image-constraints.txt \\\n"
        " && python3 -m pip install --no-cache-dir -c /tmp/image-constraints.txt /opt/gpushare-src \\\n"
        " && rm -rf /opt/gpushare-src /tmp/image-constraints.txt \\\n"
        " && gpushare --help > /dev/null\n"
        "# The manifests set each container's command; this is for `docker run IMAGE gpushare ...`.\n"
        "ENTRYPOINT []\n"
        'CMD ["gpushare", "--help"]\n'
    )
