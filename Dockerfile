# syntax=docker/dockerfile:1
# policy-evaluator: one image for the CLI, for `ray job submit` drivers and for the KubeRay head and
# worker Pods (KubeRay replaces the ENTRYPOINT with its own `ray start` command, so one image serves all).
#
#   docker build --target production -t policy-evaluator:0.1.0-ray2.60.0-cpu .                          # CPU
#   docker build --target production --build-arg VARIANT=gpu -t policy-evaluator:0.1.0-ray2.60.0-gpu .  # CUDA
#   docker build --target development -t policy-evaluator:0.1.0-ray2.60.0-cpu-dev .                      # tests
#   make image                  # the same with Docker, or with buildah where no Docker daemon answers
#
# Tag scheme: <package version>-ray<RAY_VERSION>-<VARIANT>. cluster/base/kustomization.yaml (`images:`) and
# cluster/overlays/eks-gpu/kustomization.yaml name these tags; tests/test_manifests.py checks they agree with
# this file and pyproject.toml, and tests/test_image.py that RAY_VERSION equals the ray pin in pyproject.toml.
#
# Stages: ray-cpu / ray-gpu (the Ray base of each variant) -> ray; tools (strip, for the build stages only);
# torch-cpu / torch-gpu -> torch (torch and pufferlib-core installed, staged in /tmp/stage); base (ray + that
# stage: what development and production share); wheel; build (the wheel installed, staged in /tmp/stage-app);
# production (base + that stage) and development (base + the source, editable). Only what a target needs is
# built, so a CPU build never pulls the CUDA base.

# Ray of the base image: must equal the `ray[default]==` pin of pyproject.toml (the head, the workers and
# the `ray job submit` client must all run the same Ray).
ARG RAY_VERSION=2.60.0
# rayproject/ray tags are <ray version>-py<XY>-<platform>: platform `cpu` (Ubuntu) or `cuXYZ` (NVIDIA CUDA X.Y
# base image); `-gpu` is only an alias of one cuXYZ tag, so we name the CUDA version explicitly.
ARG PYTHON_TAG=py311
ARG CUDA_TAG=cu128
# cpu (default) or gpu: selects the stages below. Pass it explicitly to buildah 1.28 and older (`make image`
# does): they ignore this default in `FROM ray-${VARIANT}` (buildah issue #4312).
ARG VARIANT=cpu
# torch is pinned here and in the Makefile, not in pyproject.toml, so each install picks its own build
# (CPU or CUDA) from the right index; tests/test_image.py checks the two pins agree.
ARG TORCH_VERSION=2.13.0
# The package index of every pip install but torch's (a mirror: --build-arg PIP_INDEX_URL=...). An ARG: pip
# reads it from each RUN's environment and the image keeps no setting of it (the layers' history shows it, so
# put no credentials in it).
ARG PIP_INDEX_URL=https://pypi.org/simple

FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu AS ray-cpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${CUDA_TAG} AS ray-gpu
# `ray-${VARIANT}` names one of the two stages above, not a registry image: there is no tag to pin (DL3006).
# hadolint ignore=DL3006
FROM ray-${VARIANT} AS ray

# Build tools, for the build stages only: binutils' strip (image/stage.py), and the staging script itself.
FROM ray AS tools
USER 0:0
# binutils runs in build stages only and reaches no image: its version does not matter (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
USER 1000:100
COPY image/stage.py /tmp/stage.py

# torch from PyTorch's CPU index (--build-arg TORCH_INDEX_URL=<a mirror of it>): the default PyPI wheel for
# Linux drags in ~3 GB of CUDA libraries that a CPU node never loads. --no-compile: the build stage compiles
# what the evaluator imports (image/stage.py).
FROM tools AS torch-cpu
ARG TORCH_VERSION
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python /tmp/stage.py before \
    && pip install --no-cache-dir --no-compile "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && python /tmp/stage.py strip \
    && python /tmp/stage.py collect /tmp/stage

# torch built for the base image's CUDA (cu128 wheels on the cu128 image), from PyTorch's matching index.
FROM tools AS torch-gpu
ARG CUDA_TAG
ARG TORCH_VERSION
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${CUDA_TAG}
RUN python /tmp/stage.py before \
    && pip install --no-cache-dir --no-compile "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && python /tmp/stage.py strip \
    && python /tmp/stage.py collect /tmp/stage

# torch of the variant: `torch-${VARIANT}` names a stage above, like `ray-${VARIANT}` (DL3006).
# hadolint ignore=DL3006
FROM torch-${VARIANT} AS torch
ARG PIP_INDEX_URL
# pufferlib-core (mettagrid's lstm/stateless/puffer policies) pins torch==2.9.0 in its metadata: installed with
# --no-deps so it never replaces the torch above; the `mettagrid-policies` extra brings what it needs.
ARG PUFFERLIB_VERSION=3.0.23
RUN python /tmp/stage.py before \
    && pip install --no-cache-dir --no-compile --no-deps "pufferlib-core==${PUFFERLIB_VERSION}" \
    && python /tmp/stage.py strip \
    && python /tmp/stage.py collect /tmp/stage

# What development and production share: the Ray base, torch and pufferlib-core (one layer), /app.
# The rayproject/ray images run as the non-root user `ray` (uid 1000, gid 100) and own their conda Python
# (/home/ray/anaconda3), so pip needs no root.
FROM ray AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=torch --chown=1000:100 /tmp/stage/ /home/ray/anaconda3/
# The files of base packages that pip replaced (image/stage.py); /app belongs to that user: pip builds in it,
# and DATA_DIR=/app/data must be writable.
USER 0:0
RUN xargs -r -d '\n' rm -rf -- < /home/ray/anaconda3/.stage-removed && rm /home/ray/anaconda3/.stage-removed \
    && mkdir -p /app/data && chown -R 1000:100 /app
USER 1000:100
WORKDIR /app

# The wheel, built once from the sources only (see .dockerignore).
FROM base AS wheel
ARG PIP_INDEX_URL
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 evaluator ./evaluator
COPY --chown=1000:100 actors ./actors
COPY --chown=1000:100 sim ./sim
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist .

# The wheel by name with its extra (pip finds it in /tmp/dist; the version is pyproject's, checked by a test),
# then one evaluation in process, which compiles the modules it imports and proves the install works; staged
# for production's one COPY without tests, headers, symbol tables or the uncompiled rest's bytecode.
FROM torch AS build
ARG PIP_INDEX_URL
COPY --from=wheel /tmp/dist/ /tmp/dist/
RUN python /tmp/stage.py before \
    && pip install --no-cache-dir --no-compile --find-links /tmp/dist "policy-evaluator[mettagrid-policies]==0.1.0" \
    && python /tmp/stage.py strip \
    && policy-evaluator run -p builtin://navigator --suite smoke --execution in-process --data-dir /tmp/warm-up \
        > /dev/null \
    && python /tmp/stage.py collect /tmp/stage-app

# development: the package editable with its test extras; docker-compose mounts the checkout over /app, so
# the editable install runs the mounted source.
FROM base AS development
ARG PIP_INDEX_URL
COPY --chown=1000:100 . /app
RUN pip install --no-cache-dir -e ".[test,mettagrid-policies]" && python -c "import torch"
ENV DATA_DIR=/app/data
CMD ["policy-evaluator", "entrypoint"]

# production: the installed wheel only (no source tree, no test tools, no build tools), non-root, configured
# by environment variables.
FROM base AS production
COPY --from=build --chown=1000:100 /tmp/stage-app/ /home/ray/anaconda3/
# The files of base packages that pip replaced (image/stage.py). The base image gives `ray` password-less sudo;
# a production image has no use for it.
USER 0:0
RUN xargs -r -d '\n' rm -rf -- < /home/ray/anaconda3/.stage-removed && rm /home/ray/anaconda3/.stage-removed \
    && sed -i '/^ray ALL=NOPASSWD: ALL$/d' /etc/sudoers && gpasswd -d ray sudo
USER 1000:100
ENV DATA_DIR=/app/data
WORKDIR /app
ENTRYPOINT ["policy-evaluator", "entrypoint"]
