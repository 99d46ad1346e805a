"""Training: pre-train the spiking ResNet, fine-tune it with a bottleneck, sweep split points, demo models.

Used through ``sbn train ...`` (training/cli.py). Needs the ``train`` extra (scikit-learn, matplotlib);
the device and edge services never import this package.
"""
