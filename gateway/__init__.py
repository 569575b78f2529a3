"""The REST edge: HTTP/JSON to gRPC, driven by the google.api.http annotations of a
descriptor set."""
