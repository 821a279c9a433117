"""The gRPC health checking protocol (grpc.health.v1), which etcd serves on its client port."""
