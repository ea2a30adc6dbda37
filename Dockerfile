# syntax=docker/dockerfile:1
# For people with a container engine: make docker-build. Without one,
# make image builds the same binary into an OCI layout (hack/tools/image).
# Both take the build flags from hack/build-flags.sh; here, with no git in
# the context, the stamp comes from the build arguments.
FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that source changes reuse this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY hack/build-flags.sh hack/
COPY approver/ approver/
COPY signer/ signer/
COPY config/ config/
COPY controllers/ controllers/
COPY cmd/ cmd/
ARG VERSION=dev
ARG COMMIT=unknown
ARG SOURCE_DATE_EPOCH=
RUN CGO_ENABLED=0 go build $(hack/build-flags.sh goflags) -ldflags "$(hack/build-flags.sh ldflags)" \
    -o /out/kubelet-csr-controller ./cmd/kubelet-csr-controller

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kubelet-csr-controller /kubelet-csr-controller
USER 65532:65532
ENTRYPOINT ["/kubelet-csr-controller"]
