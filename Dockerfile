# Multi-stage build of the orderlake binary.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
RUN cargo build --release --bin orderlake

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libcurl4 libssl3 libsasl2-2 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/orderlake /usr/local/bin/orderlake
ENTRYPOINT ["orderlake"]
