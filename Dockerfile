# The runtime with the shipped plugins and models, as a small non-root image.
#
#   docker build -t streaminfer .
#   docker run --rm -p 9898:9898 streaminfer --plugin /opt/streaminfer/plugins/fraud.wasm \
#       /opt/streaminfer/config/fraud.toml kafka.brokers=broker:9092 metrics.listen=0.0.0.0:9898
#
# Stage 1 builds the runtime (release) and the plugins (wasm32-wasip2, profile `plugin`);
# stage 2 is Debian slim with the runtime's shared libraries and nothing else. Layout inside:
# /opt/streaminfer/{config,models,plugins} as in the repository, so the configs' relative model
# paths hold. Compiled plugins are cached in /var/cache/streaminfer (mount a volume, or an
# emptyDir in Kubernetes, to keep them across restarts of the container).

# The Rust toolchain itself, with the wasm32-wasip2 target, is the one rust-toolchain.toml names:
# rustup installs it at the first cargo command, whatever this image ships.
FROM rust:1.95-slim-bookworm AS build
# librdkafka is built from source (rdkafka's default build): a C toolchain, OpenSSL and zlib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p streaminfer-runtime \
    && cargo build --locked -p fraud-plugin -p credit-scoring-plugin --target wasm32-wasip2 --profile plugin

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin streaminfer \
    && mkdir -p /var/cache/streaminfer \
    && chown streaminfer /var/cache/streaminfer
COPY --from=build /src/target/release/runtime /usr/local/bin/runtime
COPY --from=build /src/target/wasm32-wasip2/plugin/fraud_plugin.wasm /opt/streaminfer/plugins/fraud.wasm
COPY --from=build /src/target/wasm32-wasip2/plugin/credit_scoring_plugin.wasm /opt/streaminfer/plugins/credit-scoring.wasm
COPY models/fraud/fraud.onnx /opt/streaminfer/models/fraud/fraud.onnx
COPY models/credit/credit.onnx /opt/streaminfer/models/credit/credit.onnx
COPY config/fraud.toml config/credit.toml /opt/streaminfer/config/
ENV XDG_CACHE_HOME=/var/cache
USER 10001
# /metrics, /healthz, /readyz (set metrics.listen = "0.0.0.0:9898" so they are reachable).
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/runtime"]
CMD ["--plugin", "/opt/streaminfer/plugins/fraud.wasm", "/opt/streaminfer/config/fraud.toml", "metrics.listen=0.0.0.0:9898"]
