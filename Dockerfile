# spendgate: the HTTP budget service (`spendgate serve`) and the ledger
# flusher (`spendgate flush`) in one image; docker-compose.yml runs both.
#
#   docker build -t spendgate .
#   docker run -e SPENDGATE_REDIS_URL=redis://redis:6379/0 \
#              -e SPENDGATE_API_KEYS=change-me -p 8000:8000 spendgate

# -- build the wheel (the Lua scripts are force-included into it) -------------
FROM python:3.12-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md ./
COPY src ./src
COPY lua ./lua
RUN python -m build --wheel --outdir /wheels

# -- runtime --------------------------------------------------------------------
FROM python:3.12-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/spendgate-*.whl)[server,postgres]" \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 spendgate \
    && mkdir -p /var/lib/spendgate/spool \
    && chown -R spendgate:spendgate /var/lib/spendgate

# Facts that could not reach Redis wait here (appended and fsynced) until it
# answers again: mount a volume, or a restart during an outage loses them.
ENV SPENDGATE_SPOOL_PATH=/var/lib/spendgate/spool \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/spendgate"]

USER spendgate
EXPOSE 8000
# /health needs no API key: 200 when Redis answers, 503 when it does not.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["spendgate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
