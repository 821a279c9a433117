"""The Python client of the etcd v3 API."""
