# syntax=docker/dockerfile:1
# Build: docker build -t kubelet-csr-controller .
FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that source changes reuse this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY approver/ approver/
COPY signer/ signer/
COPY config/ config/
COPY controllers/ controllers/
COPY cmd/ cmd/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/kubelet-csr-controller ./cmd/kubelet-csr-controller

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kubelet-csr-controller /kubelet-csr-controller
USER 65532:65532
ENTRYPOINT ["/kubelet-csr-controller"]
