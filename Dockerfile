# mx-exporter container image.
#
#   docker build -t mx-exporter .
#   docker run -p 9706:9706 -v "$PWD/mx-exporter.yml:/etc/mx-exporter/config.yml:ro" mx-exporter
#
# Settings live at /etc/mx-exporter/config.yml (mount your own file there; see examples/mx-exporter.yml). The
# built-in one watches no domains (/probe?target= still works) and needs MX_EXPORTER_EHLO_NAME set to this
# host's public FQDN, because a container's host name is no name to greet a mail server with.

# Build stage: the wheel of mx-exporter and of every dependency, so the final stage installs offline.
FROM python:3.11-slim-bookworm AS build

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mx_exporter ./mx_exporter
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

# Final stage: the same base, the wheels installed from the build stage, nothing to compile with.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --root-user-action=ignore --no-index --find-links /wheels \
        /wheels/mx_exporter-*.whl \
    && useradd --no-log-init --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mx-exporter \
    && mkdir -p /etc/mx-exporter \
    && printf '%s\n' \
        '# Default mx-exporter settings: no watched domains. Mount your own file here.' \
        '# Set MX_EXPORTER_EHLO_NAME (or ehlo_name below) to a real FQDN of this host.' \
        'domains: []' \
        > /etc/mx-exporter/config.yml

USER 10001:10001
EXPOSE 9706
ENTRYPOINT ["mx-exporter"]
CMD ["--config.file=/etc/mx-exporter/config.yml"]
