# One image for every Switchboard process; the command picks the role:
#   docker run IMAGE backend --host 0.0.0.0 · dashboard --host 0.0.0.0 · connector sim --sites north
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWITCHBOARD_DATA_DIR=/var/lib/switchboard \
    SWITCHBOARD_LOG_FORMAT=json

WORKDIR /app
# runtime dependencies only (requirements.lock: no test, embedded-server or OTLP extras), first and in a
# layer of their own: a code change does not reinstall them
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml README.md ./
COPY sql ./sql
COPY switchboard ./switchboard
COPY backend ./backend
COPY dashboard ./dashboard
COPY connectors ./connectors
COPY tools ./tools
# the package itself, without extras: its dependencies are the lock above
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /var/lib/switchboard switchboard \
    && mkdir -p /var/lib/switchboard && chown switchboard /var/lib/switchboard

USER switchboard
WORKDIR /var/lib/switchboard
ENTRYPOINT ["switchboard"]
CMD ["backend", "--host", "0.0.0.0", "--port", "8000"]
