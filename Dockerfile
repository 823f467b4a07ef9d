# syntax=docker/dockerfile:1
# policy-evaluator: one image for the CLI, for `ray job submit` drivers and for the KubeRay head and
# worker Pods (KubeRay replaces the ENTRYPOINT with its own `ray start` command, so one image serves all).
#
#   docker build --target production -t policy-evaluator:0.1.0-ray2.60.0-cpu .                          # CPU
#   docker build --target production --build-arg VARIANT=gpu -t policy-evaluator:0.1.0-ray2.60.0-gpu .  # CUDA
#   docker build --target development -t policy-evaluator:dev .                                          # tests
#
# Tag scheme: <package version>-ray<RAY_VERSION>-<VARIANT>. cluster/base/kustomization.yaml (`images:`) and
# cluster/overlays/eks-gpu/kustomization.yaml name these tags; tests/test_manifests.py checks they agree with
# this file and pyproject.toml, and tests/test_image.py that RAY_VERSION equals the ray pin in pyproject.toml.

# Ray of the base image: must equal the `ray[default]==` pin of pyproject.toml (the head, the workers and
# the `ray job submit` client must all run the same Ray).
ARG RAY_VERSION=2.60.0
# rayproject/ray tags are <ray version>-py<XY>-<platform>: platform `cpu` (Ubuntu) or `cuXYZ` (NVIDIA CUDA X.Y
# base image); `-gpu` is only an alias of one cuXYZ tag, so we name the CUDA version explicitly.
ARG PYTHON_TAG=py311
ARG CUDA_TAG=cu128
# cpu (default) or gpu: selects the base stage below; only the selected one is pulled (BuildKit).
ARG VARIANT=cpu

FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu AS base-cpu
# torch from PyTorch's CPU index: the default PyPI wheel for Linux drags in ~3 GB of CUDA libraries that a
# CPU node never loads.
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${CUDA_TAG} AS base-gpu
ARG CUDA_TAG
# torch built for the base image's CUDA (cu128 wheels on the cu128 image), from PyTorch's matching index.
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/${CUDA_TAG}

# `base-${VARIANT}` names one of the two stages above, not a registry image: there is no tag to pin (DL3006).
# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
# torch is pinned here and in the Makefile, not in pyproject.toml, so each install picks its own build
# (CPU or CUDA) from the right index; tests/test_image.py checks the two pins agree.
ARG TORCH_VERSION=2.13.0
# pufferlib-core (mettagrid's lstm/stateless/puffer policies) pins torch==2.9.0 in its metadata: installed with
# --no-deps so it never replaces the torch above; the `mettagrid-policies` extra brings what it needs.
ARG PUFFERLIB_VERSION=3.0.23
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The rayproject/ray images run as the non-root user `ray` (uid 1000, gid 100) and own their conda Python
# (/home/ray/anaconda3), so pip needs no root.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip install --no-cache-dir --no-deps "pufferlib-core==${PUFFERLIB_VERSION}"
# /app belongs to that user: pip builds in it, and DATA_DIR=/app/data must be writable.
USER 0:0
RUN mkdir -p /app/data && chown -R 1000:100 /app
USER 1000:100
WORKDIR /app

# The wheel, built once from the sources only (see .dockerignore).
FROM base AS wheel
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 evaluator ./evaluator
COPY --chown=1000:100 actors ./actors
COPY --chown=1000:100 sim ./sim
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist .

# development: the package editable with its test extras; docker-compose mounts the checkout over /app, so
# the editable install runs the mounted source.
FROM base AS development
COPY --chown=1000:100 . /app
RUN pip install --no-cache-dir -e ".[test,mettagrid-policies]"
ENV DATA_DIR=/app/data
CMD ["policy-evaluator", "entrypoint"]

# production: the wheel only (no source tree, no test tools), non-root, configured by environment variables.
FROM base AS production
COPY --from=wheel --chown=1000:100 /tmp/dist/ /tmp/dist/
# The wheel by name with its extra; pip finds it in /tmp/dist (the version is pyproject's, checked by a test).
RUN pip install --no-cache-dir --find-links /tmp/dist "policy-evaluator[mettagrid-policies]==0.1.0" && rm -rf /tmp/dist
# The base image gives `ray` password-less sudo; a production image has no use for it.
USER 0:0
RUN sed -i '/^ray ALL=NOPASSWD: ALL$/d' /etc/sudoers && gpasswd -d ray sudo
USER 1000:100
ENV DATA_DIR=/app/data
WORKDIR /app
ENTRYPOINT ["policy-evaluator", "entrypoint"]
