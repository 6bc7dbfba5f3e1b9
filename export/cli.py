"""`bst-train`: the training and export side (synth, embed, train, report, rank, dev-as-eval, export, demo), one app.

The app sits on the export floor because three commands need it: `embed` (locates or exports the CLAP graphs it runs,
then hands the folder to `bst_rt.train.embed`), `export` and `demo`; `synth` runs `bst_rt.synth`, which sits beside
training, not in it. Each command reads its options and calls the floor that does the work (the training commands'
bodies are `bst_rt.train.commands`); heavy imports stay inside the command bodies, so `bst-train -h` stays fast.
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bst_rt.runtime.cliutil import guarded
from bst_rt.runtime.session import Provider

HELP = "Train, export and demo Broad Sound Taxonomy classifiers (PyTorch side of bst-rt)."

app = typer.Typer(
    name="bst-train",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # usage errors as one plain line, never a panel that breaks a path at the console width
)


def _show_version(value: bool) -> None:
    from bst_rt.runtime.cliutil import print_version

    if value:
        print_version("bst-train")


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Train, export and demo Broad Sound Taxonomy classifiers (PyTorch side of bst-rt)."""


class Engine(str, Enum):
    onnx = "onnx"
    torch = "torch"




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


@app.command("train")
@guarded
def train_cmd(
    data: Annotated[Path, typer.Argument(help="BSD10k folder with features/ (official layout).")],
    *,
    out: Annotated[Path, typer.Option(help="Run folder to write (an existing one resumes).")],
    cs: Annotated[Path | None, typer.Option("--cs", help="BSD35k-CS folder with features/ (v2mix, naive-concat).")] = None,
    families: Annotated[str | None, typer.Option(help="Comma-separated family names (default: every config).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override max epochs of every family.", min=1)] = None,
    patience: Annotated[int | None, typer.Option(help="Override early-stopping patience.", min=1)] = None,
    width_div: Annotated[int | None, typer.Option(help="Divide hidden widths (tests/demos; 1 = official).", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Pool seed (a seed is a parameter, not a family).", min=0)] = 0,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds: every family at each (members "
                                                   "`family@seed` beyond the first), e.g. 0,1,2.")] = None,
    pool: Annotated[str | None, typer.Option(help="Pool file naming families and seeds: a name under "
                                                  "bst_rt/train/pools (seed-p33: the seed's 31 families) or a path.")] = None,
    external: Annotated[list[str] | None, typer.Option(help="NAME=PATH of esc50, us8k or fsd50k (repeatable).")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads. The trained numbers depend on this count (recorded in "
                                              "the registry; a resume must use the same), so the default is a fixed 1, "
                                              "also the fastest for these small heads on a few cores.", min=1)] = 1,
    quick: Annotated[bool, typer.Option("--quick", help="Reduced sizes of the test pool (small synthetic data).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=JSON family option override (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA only if a test kernel works), cpu, cuda or cuda:N.")] = "cpu",
    ray: Annotated[str | None, typer.Option(help="Spread the (family, fold) trainings over Ray: auto (running "
                                                 "cluster or a new local one) or a cluster ADDRESS.")] = None,
    ray_cpus: Annotated[float, typer.Option(help="CPU cores each Ray fold task requests.", min=0.01)] = 1.0,
    ray_gpus: Annotated[float | None, typer.Option(help="GPU share each Ray fold task requests on CUDA "
                                                        "(default 0.25).", min=0.01, max=1.0)] = None,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr (terminal only).")] = True,
) -> None:
    """Train every family on the five official folds (progress bars: epochs, validation figure, ETAs); resumes an
    interrupted run."""
    from bst_rt.train.commands import train
    from bst_rt.train.members import QUICK_OVERRIDES

    overrides = dict(QUICK_OVERRIDES) if quick else {}
    for item in set_ or []:
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise typer.BadParameter(f"--set expects KEY=JSON, got {item!r}") from None
    overrides.update({k: v for k, v in (("epochs", epochs), ("patience", patience), ("width_div", width_div)) if v})
    roots = {}
    for item in external or []:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise typer.BadParameter(f"--external expects NAME=PATH, got {item!r}")
        roots[name.strip()] = Path(path)
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()] if seeds else None
    except ValueError:
        raise typer.BadParameter(f"--seeds expects comma-separated integers, got {seeds!r}") from None
    names = [f.strip() for f in families.split(",") if f.strip()] if families else None
    train(data, out, cs=cs, families=names, seed=seed, seeds=seed_list, pool=pool, overrides=overrides,
          external=roots, threads=threads, device=device, ray=ray, ray_cpus=ray_cpus, ray_gpus=ray_gpus,
          progress=progress, echo=typer.echo)


@app.command("report")
@guarded
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `bst-train train`.")],
) -> None:
    """Per-family hF (mean ± std over folds), exclusions, best single model, ensembles, and the seed system's
    reported figures beside them."""
    from bst_rt.train.commands import report

    report(run_dir, echo=typer.echo)


@app.command("rank")
@guarded
def rank_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `bst-train train`.")],
    data: Annotated[Path, typer.Argument(help="Development set (BSD10k layout with features/).")],
    k: Annotated[int, typer.Option("--top-k", min=1, help="Ensemble top-k candidates (plus each family's top-1).")] = 3,
    max_override_share: Annotated[float, typer.Option(
        help="Tuning constraint: most System 1's held-out override rate may be (inference decides each item "
             "alone); System 2 gets half.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Ranker random seed.")] = 0,
) -> None:
    """Fit the candidate ranker (nested 5-fold CV), freeze the four systems into RUN/systems.json."""
    from bst_rt.train.commands import rank
    from bst_rt.train.systems import RankOptions

    rank(run_dir, data, RankOptions(k=k, max_override_share=max_override_share, seed=seed), echo=typer.echo)


@app.command("dev-as-eval")
@guarded
def dev_as_eval_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder with systems.json (after `bst-train rank`).")],
    data: Annotated[Path, typer.Argument(help="Development set (BSD10k layout with features/).")],
    bundle: Annotated[Path | None, typer.Option(help="Deployment check through the exported bundle (audio files "
                                                     "-> ONNX) instead of the all-folds torch chain.")] = None,
) -> None:
    """Run the development set label-blind: each clip through the chain frozen from its own fold (the estimate), then
    through the all-folds chain (the deployment check); print Table 3 of both next to the nested estimate."""
    from bst_rt.train.commands import dev_as_eval_run

    dev_as_eval_run(run_dir, data, bundle, echo=typer.echo)


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
