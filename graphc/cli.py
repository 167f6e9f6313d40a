"""``graphc`` on the command line: ``graphc train-mnist``, ``graphc sweep`` (a grid of train-mnist runs on a
dask cluster), ``graphc explain-mnist``, ``graphc explain FILE.json`` and ``graphc draw FILE.json -o OUT.svg``."""

from __future__ import annotations

import argparse
import sys

from graphc.errors import GraphcError


def _positive_int(text: str) -> int:
    value = _number(int, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _count(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(float, text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _unit_interval(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def _number(kind, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None


def _directory(text: str) -> str:
    """A directory, or a path where none exists yet (missing MNIST files are downloaded there)."""
    import os

    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"not a directory: {text}")
    return text


def _train_parser(sub) -> None:
    from graphc.train import MODEL_DEFAULTS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train-mnist", help="train the seed's 784-50-10 net (or SimpleConvNet) on MNIST with a "
                       "compiled step", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=sorted(MODEL_DEFAULTS), default="mlp",
                   help="mlp: the seed's 784-50-10 net; convnet: the book's SimpleConvNet (conv 30×5×5, ReLU, "
                        "2×2 max pooling, affine 100, ReLU, affine 10)")
    per_model = "; ".join(f"{m}: {{}}" for m in MODEL_DEFAULTS)

    def model_default(key):
        return per_model.format(*(v[key] for v in MODEL_DEFAULTS.values()))

    p.add_argument("--iters", type=_count, default=argparse.SUPPRESS, help=f"training iterations ({model_default('iters')})")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    p.add_argument("--lr", type=_positive_float, default=argparse.SUPPRESS, help=f"learning rate ({model_default('lr')})")
    p.add_argument("--hidden", type=_positive_int, default=argparse.SUPPRESS, help=f"hidden units ({model_default('hidden')})")
    p.add_argument("--weight-init-std", type=_positive_float, default=d.weight_init_std)
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default=argparse.SUPPRESS,
                   help=f"({model_default('optimizer')})")
    p.add_argument("--momentum", type=_unit_interval, default=d.momentum,
                   help="momentum coefficient (with --optimizer momentum)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the initialisation and batch sampling")
    p.add_argument("--dtype", choices=["float32", "float64"], default=d.dtype)
    p.add_argument("--integer-labels", action="store_true", help="integer labels instead of one-hot targets")
    p.add_argument("--images", choices=["uint8", "float"], default=d.images,
                   help="uint8: keep the images as the files store them (a quarter of float32's memory), cast each "
                        "batch to float and divide by 255 inside the net's first products; float: normalize them "
                        "all at load, the seed's arithmetic")
    # Before --images existed, uint8 storage was this opt-in flag; it still means --images uint8.
    p.add_argument("--uint8-images", action="store_const", dest="images", const="uint8", help=argparse.SUPPRESS)
    p.add_argument("--data", type=_directory, default=None,
                   help="MNIST directory (default: $GRAPHC_DATA, else the user cache)")
    p.add_argument("--out", default=d.out, help="directory for params.npz, history.json and curves.png")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar; print a line per epoch")
    p.add_argument("--checkpoint-every", type=_count, default=d.checkpoint_every,
                   help="write OUT/checkpoint.npz (atomically) every N iterations; 0 for none")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz if it exists")


def _sweep_parser(sub) -> None:
    from graphc.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("sweep", help="a grid of train-mnist runs as tasks on a dask cluster (needs graphc[dask])",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Run every combination of the listed learning rates, widths, optimizers and seeds "
                                   "as one train-mnist task each, on a local dask cluster or on --scheduler ADDRESS; "
                                   "print a table of the results and plot every run's curves in OUT/sweep.png.")
    p.add_argument("--lr", type=_positive_float, nargs="+", default=[d.lr], help="learning rates")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=[d.hidden], help="hidden widths")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], nargs="+", default=[d.optimizer])
    p.add_argument("--seed", type=int, nargs="+", default=[d.seed], help="seeds")
    p.add_argument("--iters", type=_positive_int, default=d.iters, help="training iterations of each run")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    p.add_argument("--dtype", choices=["float32", "float64"], default=d.dtype)
    p.add_argument("--images", choices=["uint8", "float"], default=d.images)
    p.add_argument("--train-size", type=_positive_int, default=None, help="train on the first N images only")
    p.add_argument("--test-size", type=_positive_int, default=None, help="test on the first N images only")
    p.add_argument("--data", default=None, help="MNIST directory as the workers see it (default: their "
                                                "$GRAPHC_DATA, else their user cache); nothing is downloaded")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="a running dask scheduler (tcp://host:8786); default: start a local cluster")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="workers of the local cluster (default: one per core); ignored with --scheduler")
    p.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds to wait for the scheduler")
    p.add_argument("--out", default="runs/sweep", help="directory for sweep.json and sweep.png")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sweep(args) -> None:
    from graphc.train import TrainConfig

    try:
        from graphc.distributed import connect, sweep
    except ImportError as exc:
        raise GraphcError(str(exc)) from None
    base = TrainConfig(iters=args.iters, batch_size=args.batch_size, dtype=args.dtype, images=args.images,
                       data=args.data)
    configs = sweep.grid(base, lr=args.lr, hidden=args.hidden, optimizer=args.optimizer, seed=args.seed)
    client = connect(args.scheduler, workers=args.workers, timeout=args.timeout)
    try:
        where = args.scheduler or f"a local cluster of {len(client.scheduler_info()['workers'])} workers"
        print(f"graphc sweep: {len(configs)} runs on {where}", file=sys.stderr)
        results = sweep.run_sweep(client, configs, args.train_size, args.test_size, progress=not args.no_progress)
    finally:
        client.close()
    print(sweep.table(results))
    sweep.write(results, args.out, plot_curves=not args.no_plot, log=lambda line: print(f"graphc: {line}",
                                                                                          file=sys.stderr))


def _explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="print the derivation of a graph saved with graphc.save_graph",
                       description="Print the derivation of a saved graph: its saved gradients with their forward "
                                   "section, or else the gradient of its first scalar float output (the loss).")
    p.add_argument("file", metavar="FILE.json", help="a graph file written by graphc.save_graph")
    p.add_argument("--wrt", metavar="NAMES", help="comma-separated leaf names to differentiate the loss with respect "
                                                  "to (default: the saved gradients, else every param)")
    p.add_argument("--steps", action="store_true", help="show the Kronecker-delta derivation of each contraction")
    p.add_argument("--latex", action="store_true", help="LaTeX instead of text")
    p.add_argument("--html", metavar="OUT.html", help="also write the derivation as one self-contained HTML page "
                                                      "(MathML, the graph picture, the generated source)")


def _saved_derivation(path: str, wrt: str | None) -> list:
    """The nodes ``graphc explain`` shows: the file's saved gradients, or the gradient of its loss."""
    import graphc as gc
    from graphc.errors import GraphError, SerializationError
    from graphc.ops.indices import format_shape
    from graphc.serialize import load_graph

    try:
        graph, outputs = load_graph(path)
    except SerializationError as exc:  # say which file, as the reader does for a missing one
        raise exc if str(exc).startswith(path) else SerializationError(f"{path}: {exc}") from None
    derived = [n for n in outputs if n.derived]
    if derived and wrt is None:
        return derived
    losses = [n for n in outputs if not n.derived and n.shape == () and n.kind == "float"]
    if not losses:
        listed = ", ".join(f"{n.name} {format_shape(n.shape)} {n.kind}" for n in outputs) or "none"
        raise GraphError(f"{path}: nothing to explain: no saved gradients and no scalar float output to "
                         f"differentiate (outputs: {listed})")
    leaves = ", ".join(graph.leaves) or "none"
    if wrt is None:
        targets = graph.params
        if not targets:
            raise GraphError(f"{path}: graph {graph.name!r} has no params to differentiate {losses[0].name!r} "
                             f"with respect to; name leaves with --wrt (leaves: {leaves})")
    else:
        names = [w.strip() for w in wrt.split(",") if w.strip()]
        unknown = [w for w in names if w not in graph.leaves]
        if unknown or not names:
            what = f"unknown leaf name(s) {', '.join(map(repr, unknown))}" if unknown else "no leaf names given"
            raise GraphError(f"--wrt: {what}; graph {graph.name!r} has the leaves {leaves}")
        targets = [graph.leaves[w] for w in names]
    return gc.grad(losses[0], targets)


def _explain_file(args) -> None:
    import graphc as gc
    from graphc.serialize import atomic_write

    nodes = _saved_derivation(args.file, args.wrt)
    print(gc.explain(nodes, forward=True, steps=args.steps, latex=args.latex))
    if args.html:
        page = gc.explain(nodes, forward=True, steps=args.steps, html=True).encode("utf-8")
        try:
            atomic_write(args.html, lambda f: f.write(page))
        except OSError as exc:
            raise GraphcError(f"cannot write {args.html}: {exc.strerror or exc}") from None
        print(f"graphc: wrote {args.html}", file=sys.stderr)


def _draw_parser(sub) -> None:
    p = sub.add_parser("draw", help="draw a graph saved with graphc.save_graph (SVG, PNG or DOT)",
                       description="Draw a saved graph with Graphviz: its saved outputs, and, when none is a "
                                   "gradient, the gradients of its first scalar output with respect to every param.")
    p.add_argument("file", metavar="FILE.json", help="a graph file written by graphc.save_graph")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the picture: OUT.svg, OUT.png or OUT.dot")
    p.add_argument("--no-backward", action="store_true", help="the forward graph only, no gradient nodes")


def _draw_file(args) -> None:
    import graphc as gc
    from graphc.compiler.explain.draw import DotNotFound
    from graphc.serialize import load_graph

    graph, outputs = load_graph(args.file)
    nodes = list(outputs)
    losses = [n for n in outputs if n.shape == () and n.kind == "float"]
    if not args.no_backward and not any(n.derived for n in outputs) and losses and graph.params:
        nodes += gc.grad(losses[0], graph.params)
    try:
        gc.draw(nodes, backward=not args.no_backward).save(args.output)
    except DotNotFound as exc:  # the DOT text needs no Graphviz
        raise DotNotFound(f"{exc}; `-o OUT.dot` writes the DOT text without it") from None
    print(f"graphc: wrote {args.output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graphc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _sweep_parser(sub)
    ex = sub.add_parser("explain-mnist", help="print the derived gradients of the two-layer net (or SimpleConvNet)")
    ex.add_argument("--model", choices=["mlp", "convnet"], default="mlp", help="which net (as train-mnist --model)")
    ex.add_argument("--steps", action="store_true", help="show the Kronecker-delta derivation of each contraction")
    ex.add_argument("--latex", action="store_true", help="LaTeX instead of text")
    ex.add_argument("--source", action="store_true", help="also print the generated training-step source")
    _explain_parser(sub)
    _draw_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "train-mnist":
            from graphc.train import TrainConfig, train_mnist

            from graphc.train import MODEL_DEFAULTS

            chosen = {k: getattr(args, k, None) for k in ("iters", "lr", "hidden", "optimizer")}
            chosen = {k: MODEL_DEFAULTS[args.model][k] if v is None else v for k, v in chosen.items()}
            config = TrainConfig(
                model=args.model, batch_size=args.batch_size, **chosen,
                weight_init_std=args.weight_init_std, momentum=args.momentum,
                seed=args.seed, dtype=args.dtype, integer_labels=args.integer_labels, data=args.data,
                out=args.out, progress=not args.no_progress, plot=not args.no_plot,
                checkpoint_every=args.checkpoint_every, resume=args.resume,
                images=args.images,
            )
            result = train_mnist(config)
            print(result.summary())
        elif args.command == "sweep":
            _sweep(args)
        elif args.command == "explain-mnist":
            import graphc as gc
            from graphc.models import simple_conv_net, two_layer_net

            net = simple_conv_net() if args.model == "convnet" else two_layer_net()
            grads = gc.grad(net.loss, list(net.params.values()))
            print(gc.explain(grads, forward=True, steps=args.steps, latex=args.latex))
            if args.source:
                print(gc.compile([net.loss, *grads], name=net.graph.name).source)
        elif args.command == "explain":
            _explain_file(args)
        elif args.command == "draw":
            _draw_file(args)
    except GraphcError as exc:
        print(f"graphc: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
