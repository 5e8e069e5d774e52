# One image for every Matrix Clubs service (Synapse, provisioning, bots): `clubs homeserver run`,
# `clubs serve`, `clubs bots run`, the commands `make up` supervises as child processes.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CLUBS_CONFIG_DIR=/app/config
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY clubs ./clubs
COPY config ./config
RUN pip install --no-cache-dir '.[server]' 'matrix-synapse[postgres]==1.163.2' \
    && useradd --system --home /data clubs && mkdir -p /data && chown clubs /data
USER clubs
VOLUME /data
ENTRYPOINT ["clubs"]
