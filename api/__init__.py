"""The wire contract: etcd v3's .proto files (our own text, etcd's packages, services, method
names and field numbers) and the modules generated from them with `python -m api.generate`.

Nothing here has behaviour; every other package may import it.
"""
