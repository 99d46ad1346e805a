"""SpikeBottleNet: device-edge co-inference with spiking neural networks.

The one import namespace of the project. Its parts keep the repository's folders (pyproject.toml maps
them with ``package-dir``), layered so that each imports only those before it:

    spikebottlenet.v1        the gRPC stubs generated from proto/ (the proto package's own name)
    spikebottlenet.shared    model, bottleneck, wire and codec code both halves run   (shared/)
    spikebottlenet.device    the head half and the HTTP API                           (device/)
    spikebottlenet.edge      the tail half over gRPC                                  (edge/)
    spikebottlenet.training  pre-training, fine-tuning, sweeps, the demo models       (training/)
    spikebottlenet.sbn       the ``sbn`` command line                                 (sbn/)
"""
