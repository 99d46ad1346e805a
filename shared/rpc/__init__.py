"""The wire helpers both ends share (``wire``), and the stub generator (``generate``).

The stubs themselves are ``spikebottlenet.v1``: protoc names their modules after the proto package, and the
project installs them under that same name, so a message pickled in one process (Ray Serve hands requests
from its gRPC proxy to the replicas that way) unpickles in another.
"""
