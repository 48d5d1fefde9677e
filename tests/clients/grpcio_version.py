#!/usr/bin/env python3
"""Calls ferrio's Version and ListPodSandbox through gRPC C-core (Python `grpcio` from PyPI)
on a unix socket, with the authority grpcio chooses itself (since 1.57, the %-encoded socket
path). Prints one JSON line: grpcio's version, Version's four fields, the number of pods.

Messages are encoded by hand (a few tagged strings) so that the client is grpcio alone, with
no generated code: VersionRequest{version=1}, VersionResponse{version=1, runtime_name=2,
runtime_version=3, runtime_api_version=4}, ListPodSandboxResponse{items=1}.
"""
import json
import sys

import grpc


def fields(data):
    """The length-delimited fields of a protobuf message, as (number, bytes)."""
    out, i = [], 0
    while i < len(data):
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            n, i = varint(data, i)
            out.append((number, data[i:i + n]))
            i += n
        elif wire == 0:
            _, i = varint(data, i)
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def varint(data, i):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def main():
    target = sys.argv[1]
    with grpc.insecure_channel(target) as ch:
        version = ch.unary_unary(
            "/runtime.v1.RuntimeService/Version",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        reply = dict((n, v.decode()) for n, v in fields(version(b"\x0a\x02v1", timeout=10)))
        pods = ch.unary_unary(
            "/runtime.v1.RuntimeService/ListPodSandbox",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        items = [v for n, v in fields(pods(b"", timeout=10)) if n == 1]
    print(json.dumps({
        "grpcio": grpc.__version__,
        "version": reply.get(1),
        "runtime_name": reply.get(2),
        "runtime_version": reply.get(3),
        "runtime_api_version": reply.get(4),
        "pods": len(items),
    }))


if __name__ == "__main__":
    main()
