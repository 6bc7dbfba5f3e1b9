"""`bst-train`: the training and export side (synth, embed, train, report, rank, dev-as-eval, export, demo).

The app sits on the export floor because three commands need it: `embed` (locates or exports the CLAP graphs it runs,
then hands the folder to `bst_rt.train.embed`), `export` and `demo`; `synth` runs `bst_rt.synth`, which sits beside
training, not in it. The training floor's own commands are defined in `bst_rt.train.cli` and registered here in the
order `bst-train --help` lists them."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bst_rt.runtime.cliutil import guarded
from bst_rt.runtime.session import Provider
from bst_rt.train import cli as train_cli

app = train_cli.new_app()


class Engine(str, Enum):
    onnx = "onnx"
    torch = "torch"



# Commands are added below, one function each; heavy imports stay inside the command bodies.


@app.command("synth")
@guarded
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write BSD10k/, BSD35k-CS/, eval/ and eval_labels.csv into.")],
    *,
    per_class: Annotated[int, typer.Option(help="BSD10k clips per class (BSD35k-CS: as many on average).", min=1)] = 12,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes byte-identical files.", min=0)] = 0,
    cs_noise: Annotated[float, typer.Option(help="Share of BSD35k-CS labels made wrong.", min=0.0, max=1.0)] = 0.3,
    n_eval: Annotated[int, typer.Option("--eval", help="Clips in the evaluation package (8 or more).", min=8)] = 40,
    with_features: Annotated[bool, typer.Option("--with-features", help="Write stand-in embeddings too.")] = False,
) -> None:
    """Write a deterministic synthetic corpus in the BSD10k, BSD35k-CS and evaluation-package layouts."""
    from bst_rt.synth.corpus import write_corpus

    paths = write_corpus(out, per_class=per_class, seed=seed, cs_noise=cs_noise, n_eval=n_eval,
                         with_features=with_features, show_progress=True)
    typer.echo(f"wrote {paths.dev}, {paths.cs}, {paths.eval} and {paths.eval_labels}")


@app.command("embed")
@guarded
def embed_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="Development set (BSD10k / BSD35k-CS layout) or evaluation package.")],
    *,
    clap_ckpt: Annotated[Path | None, typer.Option(help="LAION-CLAP fusion checkpoint (630k-audioset-fusion-best.pt).")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="CLAP at seeded random weights (tests/demo only).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of --random-weights.")] = 0,
    tokenizer_dir: Annotated[Path | None, typer.Option(help="Real RoBERTa tokenizer folder (vocab.json, merges.txt).")] = None,
    engine: Annotated[Engine, typer.Option(help="onnx (exported graphs, as deployed) or torch (laion-clap itself).")] = Engine.onnx,
    graphs: Annotated[Path | None, typer.Option(help="Reuse CLAP graphs exported to this folder (onnx engine).")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips / texts per encoder call.", min=1)] = 8,
    provider: Annotated[Provider, typer.Option(help="onnxruntime provider; auto picks CUDA only when it really works.")] = Provider.auto,
    threads: Annotated[int | None, typer.Option(help="onnxruntime intra-op threads (default: all cores).")] = None,
    device: Annotated[str, typer.Option(help="torch engine: auto, cpu, cuda or cuda:N.")] = "cpu",
    builtin_class_texts: Annotated[bool, typer.Option("--builtin-class-texts", help="Use the built-in class texts "
                                                      "where metadata/BST_description.csv is unreadable.")] = False,
    ray: Annotated[str | None, typer.Option(help="Embed on a Ray cluster: 'auto' or its ADDRESS (onnx engine; "
                                                 "needs the [ray] extra).")] = None,
    ray_concurrency: Annotated[int, typer.Option(min=1, help="--ray: encoder actors.")] = 1,
    ray_gpus_per_actor: Annotated[float, typer.Option(min=0.0, help="--ray: GPUs per actor (CUDA).")] = 0.0,
) -> None:
    """Write CLAP audio, text and masked-text embeddings under DATASET_DIR/features/ (skips files already there)."""
    from bst_rt.train.embed import embed_dataset

    from .graph_cache import graph_source

    if graphs is None and (clap_ckpt is None) == (not random_weights):
        raise typer.BadParameter("give --clap-ckpt PATH or --random-weights (or --graphs DIR), exactly one")
    if random_weights:
        typer.echo("WARNING: CLAP at RANDOM weights: these embeddings are meaningless outside tests and demos.", err=True)
    # the onnx engine runs exported graphs: the given folder, else the cache (exported only if something is missing)
    source = graphs if graphs is not None else graph_source(clap_ckpt, random_weights, seed, tokenizer_dir)
    rows = None  # the row source: this process, or Ray actors (the same embed run either way)
    if ray is not None:
        from bst_rt.runtime.distributed import RayOptions
        from bst_rt.train.embed_ray import RayEmbedSource

        if engine.value != "onnx":
            raise typer.BadParameter("--ray runs the exported graphs: use --engine onnx")
        rows = RayEmbedSource(RayOptions(ray, ray_concurrency, num_gpus=ray_gpus_per_actor), graphs=source,
                              provider=provider.value, threads=threads)
    report = embed_dataset(dataset_dir, engine=engine.value, clap_ckpt=clap_ckpt,  # type: ignore[arg-type]
                           random_weights=random_weights, seed=seed, tokenizer_dir=tokenizer_dir, graphs=source,
                           batch_size=batch_size, provider=provider.value, threads=threads, device=device,
                           builtin_class_texts=builtin_class_texts, source=rows, log=typer.echo)
    typer.echo(report.summary())


app.command("train")(train_cli.train_cmd)
app.command("report")(train_cli.report_cmd)
app.command("rank")(train_cli.rank)
app.command("dev-as-eval")(train_cli.dev_as_eval_cmd)


@app.command("export")
@guarded
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder from `bst-train train` + `bst-train rank`.")],
    *,
    out: Annotated[Path, typer.Option(help="Bundle folder to write (e.g. artifacts/NAME).")],
    clap_ckpt: Annotated[Path | None, typer.Option(help="LAION-CLAP fusion checkpoint (.pt).")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="CLAP at seeded random weights (demo only).")] = False,
    tokenizer_dir: Annotated[Path | None, typer.Option(help="Real roberta-base tokenizer folder (vocab.json, merges.txt).")] = None,
    clap_dir: Annotated[Path | None, typer.Option(help="Reuse CLAP graphs already exported to this folder.")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also ship int8 CLAP graphs.")] = False,
    data: Annotated[Path | None, typer.Option(help="Dev dataset whose embeddings validate the heads (default: the run's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --random-weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle folder.")] = False,
) -> None:
    """Export a trained, ranked run to one verified bundle (ONNX graphs + manifest.json) for `bst-rt predict`."""
    from .bundle import ExportOptions, export_bundle

    if clap_ckpt is not None and random_weights:
        raise typer.BadParameter("give --clap-ckpt or --random-weights, not both")
    export_bundle(run, out, ExportOptions(clap_dir=clap_dir, clap_ckpt=clap_ckpt, tokenizer_dir=tokenizer_dir,
                                          random_weights=random_weights,
                                          seed=seed, int8=int8, data_dir=data, force=force), log=typer.echo)


@app.command("demo")
@guarded
def demo_cmd(
    *,
    work: Annotated[Path, typer.Option(help="Working folder (corpus, embeddings, run, CSVs).")] = Path("artifacts/demo-work"),
    bundle: Annotated[Path, typer.Option(help="Where the bundle goes (recorded as the default bundle).")] = Path("artifacts/demo"),
    per_class: Annotated[int, typer.Option(min=7, help="Synthetic clips per class (the official 5 folds need 7).")] = 10,
    epochs: Annotated[int, typer.Option(min=1, help="Max epochs per fold.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the corpus, CLAP's random weights and training.")] = 0,
    int8: Annotated[bool, typer.Option("--int8", help="Also ship int8 CLAP graphs (`bst-rt predict --int8`).")] = False,
) -> None:
    """The whole chain on the synthetic corpus with CLAP at RANDOM weights: ends with a scored CSV and a bundle."""
    from .demo import DemoOptions, format_summary, run_demo

    summary = run_demo(DemoOptions(work=work, bundle=bundle, per_class=per_class, seed=seed, epochs=epochs, int8=int8),
                       log=typer.echo)
    typer.echo(format_summary(summary))
