#!/usr/bin/env python3
"""Calls ferrio's PullImage through gRPC C-core (Python `grpcio` from PyPI) on a unix socket and
prints one JSON line: the status code's name and its details ("OK" and the image ID on success).

The request is encoded by hand so that the client is grpcio alone:
PullImageRequest{image=1: ImageSpec{image=1: string}}.
"""
import json
import sys

import grpc


def ld(number, payload):
    """A length-delimited protobuf field (lengths here are under 2^14)."""
    n = len(payload)
    length = bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])
    return bytes([number << 3 | 2]) + length + payload


def main():
    target, image = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as ch:
        pull = ch.unary_unary(
            "/runtime.v1.ImageService/PullImage",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            reply = pull(ld(1, ld(1, image.encode())), timeout=60)
            print(json.dumps({"code": "OK", "details": reply[2:].decode(errors="replace")}))
        except grpc.RpcError as e:
            print(json.dumps({"code": e.code().name, "details": e.details()}))


if __name__ == "__main__":
    main()
