"""The gRPC stubs (generated into ``spikebottlenet/v1`` here by ``python -m shared.rpc.generate``) and the wire
helpers both ends share.

protoc names the module of every message class after the proto file's path, ``spikebottlenet.v1.split_inference_pb2``,
not after where the stubs are installed. Pickle looks classes up by that name, so a message pickled in one process
would not unpickle in another (Ray Serve hands requests from its gRPC proxy to the replicas that way). The stubs are
registered under the names their classes claim, once, here: importing them imports this package first.
"""

from __future__ import annotations

import sys

try:
    from . import spikebottlenet
    from .spikebottlenet import v1
    from .spikebottlenet.v1 import split_inference_pb2
except ImportError:  # not generated yet: `python -m shared.rpc.generate`, which lives in this package, makes them
    pass
else:
    for _name, _module in (("spikebottlenet", spikebottlenet), ("spikebottlenet.v1", v1),
                           ("spikebottlenet.v1.split_inference_pb2", split_inference_pb2)):
        sys.modules.setdefault(_name, _module)
