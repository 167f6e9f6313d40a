"""Train the seed's MNIST two-layer net (784-50-10, ReLU, softmax cross-entropy, SGD) with graphc.

    GRAPHC_DATA=../shared/mnist python examples/mnist_two_layer.py [--iters 10000] [--seed 0] ...

The same flags as ``graphc train-mnist``; see ``--help``.
"""

import sys

from graphc.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-mnist", *sys.argv[1:]]))
