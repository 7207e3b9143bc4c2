# robustd with CUDA-capable libtorch: the pinned torch wheel (which carries libtorch for CPU and
# CUDA) is both what the binary links against and what it runs with.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.txt .
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir torch==2.13.0
COPY . .
ENV LIBTORCH=/opt/venv/lib/python3.11/site-packages/torch LIBTORCH_CXX11_ABI=1
RUN cargo build --release --bin robustd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# The binary's rpath names this folder, so libtorch is found without LD_LIBRARY_PATH.
COPY --from=build /opt/venv/lib/python3.11/site-packages/torch/lib \
    /opt/venv/lib/python3.11/site-packages/torch/lib
COPY --from=build /opt/venv/lib/python3.11/site-packages/nvidia \
    /opt/venv/lib/python3.11/site-packages/nvidia
COPY --from=build /src/target/release/robustd /usr/local/bin/robustd
COPY models /srv/robustd/models
WORKDIR /srv/robustd
EXPOSE 8000
# On 0.0.0.0 the server needs tokens (ROBUSTD_TOKENS or a mounted ROBUSTD_TOKENS_FILE); it
# refuses to start without them rather than open every route to the network.
ENV ROBUSTD_HOST=0.0.0.0 ROBUSTD_MODELS=/srv/robustd/models ROBUSTD_DATA_DIR=/srv/robustd/data
ENTRYPOINT ["robustd"]
CMD ["serve"]
