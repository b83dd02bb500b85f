# syntax=docker/dockerfile:1
# Two stages: build with the Rust toolchain, run on a slim Debian as an unprivileged user.

FROM rust:1.89-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src src
COPY migrations migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin token-broker

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/token-broker --create-home broker
COPY --from=build /src/target/release/token-broker /usr/local/bin/token-broker
USER broker
ENV BIND_ADDR=0.0.0.0:8080 \
    TOKEN_BROKER_DATA_DIR=/var/lib/token-broker \
    LOG_FORMAT_JSON=true
EXPOSE 8080
ENTRYPOINT ["token-broker"]
CMD ["serve"]
