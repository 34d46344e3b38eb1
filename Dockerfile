# syntax=docker/dockerfile:1
# A small image that runs sts (`sts serve`: granian by default) as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sts ./sts
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
# STS_ENV=production: no generated key passphrase beside the keys it encrypts, no plain-http
# issuer other than loopback. Set STS_ISSUER (the public URL) and STS_KEY_PASSPHRASE (or
# STS_KEYSTORE=database with STS_KEY_ENCRYPTION_KEY) when running the image.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STS_ENV=production \
    STS_INSTANCE_DIR=/var/lib/sts \
    STS_KEYS_DIR=/var/lib/sts/keys
COPY --from=build /install /usr/local
WORKDIR /app
# Alembic migrations are read from ./migrations at run time (sts db upgrade, start-up check).
# A deployment's rules revisions: mount them at /app/migrations/versions/rules, or set
# STS_RULES_MIGRATIONS_DIR to where they are mounted.
COPY migrations ./migrations
RUN useradd --system --uid 10001 --home-dir /var/lib/sts --create-home sts \
    && chmod 0700 /var/lib/sts
USER 10001
# Behind a reverse proxy that buffers request bodies (README, "Container"): neither WSGI
# server bounds how long a body may take to arrive.
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["sts", "serve", "--bind", "0.0.0.0:8080", "--workers", "2"]
