"""The RPC runtime every service shares: server bootstrap, health and status, error mapping,
channels to peers, TLS, logging, metrics, retry hints, bounded admission, upload checks and
protobuf conversions."""
