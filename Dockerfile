# Switchboard on the offline `local` pipeline. Models come from PyPI packages; nothing
# is downloaded at run time.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/switchboard
COPY deploy/build-llama-server ./deploy/
# llama.cpp's server compiles here (several minutes), for AVX2 rather than the build host's CPU.
RUN deploy/build-llama-server /usr/local/bin

COPY pyproject.toml constraints.txt requirements-nodeps.txt README.md ./
COPY app ./app
COPY pipelines ./pipelines
COPY processors ./processors
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip install --no-cache-dir --no-deps -r requirements-nodeps.txt \
 && apt-get purge -y build-essential cmake && apt-get autoremove -y

ENV SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_PORT=8000 \
    SWITCHBOARD_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["switchboard", "serve"]
