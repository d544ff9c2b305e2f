# aep-export as a one-shot container job (see README: "Container image" and "Run on Kubernetes").
#
#   pip wheel -w build/wheels .                              # the project and its dependencies
#   podman build --build-arg BASE=python:3.12-slim -t aep-export .    # or: docker build …
#
# BASE is any image with python3 (3.11+) and its venv module. The wheelhouse is built on the host;
# when it was built for another Python than the image's (say 3.11 on the host, 3.12 in the image),
# the install falls back to the package index for the binary dependencies (see README).

ARG BASE=python:3.12-slim

# -- build: a self-contained venv installed from the wheelhouse (no compiler, no cache) -------
FROM ${BASE} AS build
LABEL io.aep-export.stage="build"
COPY build/wheels /wheels
# The project always comes from the wheelhouse (by file name, never from an index); its dependencies
# too, unless the wheelhouse was built for another Python: then from the index, for this one.
RUN python3 -m venv /opt/aep-export \
 && ( /opt/aep-export/bin/pip install --no-cache-dir --disable-pip-version-check -q --no-index --find-links /wheels /wheels/aep_export-*.whl \
      || { echo "the wheelhouse does not fit this image's Python: taking the dependencies from the package index"; \
           /opt/aep-export/bin/pip install --no-cache-dir --disable-pip-version-check -q --find-links /wheels /wheels/aep_export-*.whl; } ) \
 && /opt/aep-export/bin/pip uninstall -y -q pip \
 && /opt/aep-export/bin/aep-export --version

# -- run: the venv only, a fixed non-root uid, nothing written outside /out and /tmp ----------
FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="aep-export" \
      org.opencontainers.image.description="Async, resumable, verified bulk export of Adobe Experience Platform datasets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Proprietary" \
      org.opencontainers.image.documentation="README.md: Container image, Run on Kubernetes"
COPY --from=build /opt/aep-export /opt/aep-export
# A passwd entry for the fixed uid (10001) without needing useradd in the base image; /out is
# the default working and output directory, writable by that uid when a volume is mounted there.
RUN echo 'aep:x:10001:10001:aep-export:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'aep:x:10001:' >> /etc/group \
 && mkdir -p /out && chown 10001:10001 /out
ENV PATH=/opt/aep-export/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
USER 10001:10001
WORKDIR /out
ENTRYPOINT ["/opt/aep-export/bin/aep-export"]
CMD ["--help"]
