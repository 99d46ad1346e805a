# SpikeBottleNet images: one Dockerfile, three targets.
#
#   docker build --target edge        -t spikebottlenet-edge        .   # tail half over gRPC, port 50051
#   docker build --target device      -t spikebottlenet-device      .   # head half + HTTP API, port 8000
#   docker build --target device-lite -t spikebottlenet-device-lite .   # the same device without torch: the
#                                                                       # embedded heads as ONNX, in onnxruntime
#
# (docker-compose.yml builds and runs both.) Build arguments:
#   BASE_IMAGE       a Debian-based image with python3.11 and its venv module; python:3.11-slim by
#                    default (python may live in /usr/local/bin, as there, or in /usr/bin)
#   TORCH_VERSION    2.13.0, the version pyproject.toml pins
#   TORCH_INDEX_URL  where torch and its own dependencies come from: the official CPU-only index by
#                    default, so no CUDA packages are ever downloaded. "" = pip's default index
#                    (PIP_INDEX_URL, else PyPI) plus PIP_FIND_LINKS, which should then hold the CPU
#                    wheel: PyPI's x86-64 Linux torch is a CUDA build, which the check below refuses.
#   PIP_FIND_LINKS   an extra wheel source pip searches too (a folder or an HTTP page of wheels),
#                    e.g. a local torch CPU wheel: --build-arg PIP_FIND_LINKS=http://127.0.0.1:8765/
#   PIP_INDEX_URL    index for the other dependencies ("" = pip's default, PyPI)
#
# Layer order keeps rebuilds cheap: the dependency layers depend only on the dependency list in
# pyproject.toml, and the project is installed in a separate small stage, so a code change only
# replaces the last, ~2 MB layer.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# requirements: the runtime dependencies of pyproject.toml as requirements files, in a stage of
# its own so that edits elsewhere in pyproject.toml (version, other extras, tool settings) keep
# the dependency layers below cached: the base list (what a device without torch needs), the
# torch extra but torch itself (installed first, below), the device-lite extra, and the onnx
# extra's exporter packages. The dev/train extras are not installed in the images.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
own = lambda names: '\n'.join(n for n in names if not n.startswith(('spikebottlenet', 'torch=='))) + '\n'; \
open('/requirements.txt', 'w').write(own(p['dependencies'])); \
open('/requirements-torch.txt', 'w').write(own(extras['torch'])); \
open('/requirements-lite.txt', 'w').write(own(extras['device-lite'])); \
open('/requirements-onnx.txt', 'w').write(own(extras['onnx']))"

# ---------------------------------------------------------------------------------------------
# deps: a virtualenv with torch (CPU build) and the project's runtime dependencies; no project code.
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
ARG PIP_INDEX_URL=
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

# The unprivileged user the services run as (fixed uid/gid, for mounted checkpoints' permissions).
# torch first, pinned, and checked to be the CPU build. The C++ headers, test binaries and test data
# some torch wheels carry are dropped (~200 MB): nothing here compiles C++ extensions or
# torch.compile kernels at runtime. torch_shm_manager stays.
RUN groupadd --system --gid 10001 sbn \
 && useradd --system --uid 10001 --gid sbn --create-home --home-dir /home/sbn --shell /usr/sbin/nologin sbn \
 && python3 -m venv /opt/venv \
 && pip install --no-cache-dir --disable-pip-version-check \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION}" \
 && python -c "import torch; assert not torch.version.cuda, 'got a CUDA build of torch'; print('torch', torch.__version__)" \
 && cd /opt/venv/lib/python3*/site-packages/torch \
 && find bin -mindepth 1 -maxdepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
 && rm -rf test include

# The project's runtime dependencies and the rest of the torch extra; torch is already satisfied by the pin above.
COPY --from=requirements /requirements.txt /requirements-torch.txt /tmp/
RUN pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt -r /tmp/requirements-torch.txt \
 && rm /tmp/requirements*.txt

# ---------------------------------------------------------------------------------------------
# build: `pip install .` of the project alone (code and the embedded demo checkpoints, which are
# package data) into /install, laid out like /opt/venv. Small: no torch here.
FROM ${BASE_IMAGE} AS build
ARG PIP_FIND_LINKS=
ARG PIP_INDEX_URL=
COPY . /src
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --prefix=/install /src \
 && { ls -l /install/lib/python3*/site-packages/spikebottlenet/shared/models/*.safetensors \
      || { echo 'no embedded demo checkpoints (shared/models/*.safetensors, package data) were installed' >&2; exit 1; }; }

# ---------------------------------------------------------------------------------------------
# runtime: the dependencies plus the installed project, run as the unprivileged user.
FROM deps AS runtime
COPY --from=build /install/ /opt/venv/
USER sbn

# ---------------------------------------------------------------------------------------------
# edge: healthy once the standard grpc.health.v1 service answers SERVING for the whole server,
# which the edge reports after its model has loaded.
FROM runtime AS edge
ENV SBN_EDGE_HOST=0.0.0.0 \
    SBN_EDGE_PORT=50051 \
    SBN_EDGE_THREADS=1
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os,sys,grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; c=grpc.insecure_channel('127.0.0.1:'+os.environ.get('SBN_EDGE_PORT','50051'), options=[('grpc.enable_http_proxy',0)]); s=g.HealthStub(c).Check(h.HealthCheckRequest(service=''), timeout=4).status; sys.exit(s!=h.HealthCheckResponse.SERVING)"
CMD ["sbn", "edge"]

# ---------------------------------------------------------------------------------------------
# device: healthy once GET /readyz is 200, i.e. the edge is reachable and serves the same model
# (fingerprint). The probe uses urllib: the image has no curl.
FROM runtime AS device
ENV SBN_DEVICE_HOST=0.0.0.0 \
    SBN_DEVICE_PORT=8000 \
    SBN_DEVICE_THREADS=1 \
    SBN_DEVICE_EDGE_ADDRESS=edge:50051
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os,urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:'+os.environ.get('SBN_DEVICE_PORT','8000')+'/readyz', timeout=4)"
CMD ["sbn", "device"]

# ---------------------------------------------------------------------------------------------
# heads: every embedded demo model's head exported as ONNX (`sbn export onnx`, which checks each file
# against the torch head), for device-lite. Built with torch; only the .onnx files leave this stage.
# After the device target, so that a builder that builds every stage up to its target (Docker's
# classic one) does not export them for the edge or the torch device.
FROM runtime AS heads
USER root
COPY --from=requirements /requirements-onnx.txt /tmp/
RUN pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements-onnx.txt \
 && mkdir /heads \
 && python -c "from spikebottlenet.shared.checkpoint_metadata import embedded_models; \
print('\n'.join(str(c.path) for c in embedded_models()))" > /tmp/embedded.txt \
 && while read -r checkpoint; do \
      sbn export onnx --checkpoint "$checkpoint" --out "/heads/$(basename "$checkpoint" .safetensors).onnx" || exit 1; \
    done < /tmp/embedded.txt

# ---------------------------------------------------------------------------------------------
# deps-lite: the device's dependencies without torch (the device-lite extra: onnxruntime), checked
# to hold no torch, so that nothing it runs can import it.
FROM ${BASE_IMAGE} AS deps-lite
ARG PIP_FIND_LINKS=
ARG PIP_INDEX_URL=
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1
COPY --from=requirements /requirements.txt /requirements-lite.txt /tmp/
RUN groupadd --system --gid 10001 sbn \
 && useradd --system --uid 10001 --gid sbn --create-home --home-dir /home/sbn --shell /usr/sbin/nologin sbn \
 && python3 -m venv /opt/venv \
 && pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt -r /tmp/requirements-lite.txt \
 && rm /tmp/requirements*.txt \
 && python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch in the lite image'"

# ---------------------------------------------------------------------------------------------
# device-lite: the device on onnxruntime, no torch (pyproject's device-lite extra), serving the
# embedded models' heads as exported in the heads stage; the same settings, API and health check
# as the device (SBN_DEVICE_ARCH and SBN_DEVICE_SPLIT_POINT pick the default model among them).
FROM deps-lite AS device-lite
COPY --from=build /install/ /opt/venv/
COPY --from=heads /heads/ /opt/heads/
USER sbn
ENV SBN_DEVICE_HOST=0.0.0.0 \
    SBN_DEVICE_PORT=8000 \
    SBN_DEVICE_THREADS=1 \
    SBN_DEVICE_EDGE_ADDRESS=edge:50051 \
    SBN_DEVICE_RUNTIME=onnx \
    SBN_DEVICE_ONNX_HEADS=/opt/heads
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os,urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:'+os.environ.get('SBN_DEVICE_PORT','8000')+'/readyz', timeout=4)"
CMD ["sbn", "device"]
